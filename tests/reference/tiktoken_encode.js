// Encodes a UTF-8 file with the second reference tokenizer, tiktoken (OpenAI's, as WebAssembly)
// with its bundled "gpt2" ranks, and writes the ids as JSON. Special-token text such as
// "<|endoftext|>" is encoded as ordinary text, as gpt-3-encoder and fuji's BpeTokenizer do.
// Usage: node tiktoken_encode.js TIKTOKEN_DIR INPUT OUTPUT.json
'use strict';
const fs = require('fs');

const [tiktokenDir, input, output] = process.argv.slice(2);
if (!output) {
  console.error('usage: node tiktoken_encode.js TIKTOKEN_DIR INPUT OUTPUT.json');
  process.exit(2);
}
const { get_encoding } = require(tiktokenDir);
const enc = get_encoding('gpt2');
try {
  const ids = Array.from(enc.encode_ordinary(fs.readFileSync(input, 'utf8')));
  fs.writeFileSync(output, JSON.stringify(ids));
} finally {
  enc.free();  // the encoder lives in WebAssembly memory, outside the JavaScript heap
}
