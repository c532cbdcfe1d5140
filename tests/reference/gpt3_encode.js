// Encodes a UTF-8 file with the reference tokenizer, gpt-3-encoder, and writes the ids as JSON.
// Usage: node gpt3_encode.js GPT_3_ENCODER_DIR INPUT OUTPUT.json
'use strict';
const fs = require('fs');

const [encoderDir, input, output] = process.argv.slice(2);
if (!output) {
  console.error('usage: node gpt3_encode.js GPT_3_ENCODER_DIR INPUT OUTPUT.json');
  process.exit(2);
}
const { encode } = require(encoderDir);
const ids = encode(fs.readFileSync(input, 'utf8'));
fs.writeFileSync(output, JSON.stringify(ids));
