// fujid's OpenAI-compatible API through the official openai npm client (third_party/npm), as a
// user of it would call it. Run by tests/integration/openai_http_test.cc, which starts fujid and
// an agent and sets:
//   FUJI_OPENAI_MODULE  the client's index.mjs          FUJI_HTTP_BASE  https://127.0.0.1:PORT/v1
//   FUJI_API_KEY        a fuji user's token             NODE_EXTRA_CA_CERTS  fujid's CA
//   FUJI_MODEL          a model without a chat template  FUJI_CHAT_MODEL  one with chat_template.json
// Prints PASS or FAIL for each check and exits 1 when any failed.
import { pathToFileURL } from "node:url";

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set`);
    process.exit(2);
  }
  return value;
};
const { default: OpenAI } = await import(pathToFileURL(env("FUJI_OPENAI_MODULE")).href);
const baseURL = env("FUJI_HTTP_BASE");
const model = env("FUJI_MODEL");
const chatModel = env("FUJI_CHAT_MODEL");
// No retries: every request is one job, and a failure must show as one.
const client = new OpenAI({ baseURL, apiKey: env("FUJI_API_KEY"), maxRetries: 0, timeout: 180_000 });

let failed = 0;
async function check(name, body) {
  try {
    await body();
    console.log(`PASS ${name}`);
  } catch (error) {
    failed++;
    console.log(`FAIL ${name}: ${error?.stack ?? error}`);
  }
}
function expect(condition, message) {
  if (!condition) throw new Error(message);
}
// The request must fail with this error class and HTTP status.
async function expectError(promise, errorClass, status) {
  try {
    const value = await promise;
    throw new Error(`expected ${errorClass.name} (${status}), got ${JSON.stringify(value).slice(0, 300)}`);
  } catch (error) {
    if (!(error instanceof errorClass)) throw error;
    expect(error.status === status, `status ${error.status}, expected ${status}`);
    return error;
  }
}
async function streamedText(stream, pick) {
  let text = "";
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    if (chunk.choices.length === 0) continue;
    text += pick(chunk.choices[0]) ?? "";
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  return { text, finish, usage };
}

const prompt = "Mt. Fuji is";
let greedy = null;

await check("models.list contains the models", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  expect(ids.includes(model), `${model} not in ${JSON.stringify(ids)}`);
  expect(ids.includes(chatModel), `${chatModel} not in ${JSON.stringify(ids)}`);
  const one = await client.models.retrieve(model);
  expect(one.id === model && one.owned_by === "fuji", JSON.stringify(one));
});

await check("completions.create gives text and usage", async () => {
  const r = await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0 });
  expect(r.object === "text_completion", `object ${r.object}`);
  expect(typeof r.choices[0].text === "string" && r.choices[0].text.length > 0, `text ${JSON.stringify(r.choices)}`);
  expect(["length", "stop"].includes(r.choices[0].finish_reason), `finish_reason ${r.choices[0].finish_reason}`);
  const u = r.usage;
  expect(u.prompt_tokens > 0 && u.completion_tokens > 0 && u.completion_tokens <= 12, JSON.stringify(u));
  expect(u.total_tokens === u.prompt_tokens + u.completion_tokens, JSON.stringify(u));
  greedy = r;
});

await check("a streamed completion's deltas concatenate to the same greedy text", async () => {
  expect(greedy, "no non-streamed completion to compare with");
  const stream = await client.completions.create({
    model, prompt, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  const { text, finish, usage } = await streamedText(stream, (c) => c.text);
  const whole = greedy.choices[0].text;
  expect(text === whole, `streamed ${JSON.stringify(text)} != ${JSON.stringify(whole)}`);
  expect(finish === greedy.choices[0].finish_reason, `finish_reason ${finish}`);
  expect(usage && usage.completion_tokens === greedy.usage.completion_tokens, `usage ${JSON.stringify(usage)}`);
});

await check("stop cuts the text before the stop string", async () => {
  expect(greedy, "no non-streamed completion to compare with");
  const full = greedy.choices[0].text;
  // A stop string from the middle of the greedy text: the answer ends before its first occurrence.
  const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 3);
  expect(stop.length > 0, `text too short: ${JSON.stringify(full)}`);
  const r = await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0, stop: [stop] });
  expect(r.choices[0].text === full.slice(0, full.indexOf(stop)),
         `stop ${JSON.stringify(stop)}: ${JSON.stringify(r.choices[0].text)} from ${JSON.stringify(full)}`);
  expect(r.choices[0].finish_reason === "stop", `finish_reason ${r.choices[0].finish_reason}`);
  const stream = await client.completions.create({
    model, prompt, max_tokens: 12, temperature: 0, stop: [stop], stream: true,
  });
  const streamed = await streamedText(stream, (c) => c.text);
  expect(streamed.text === r.choices[0].text, `streamed with stop: ${JSON.stringify(streamed.text)}`);
  expect(streamed.finish === "stop", `streamed finish_reason ${streamed.finish}`);
});

await check("a bad token is 401 (AuthenticationError)", async () => {
  const bad = new OpenAI({ baseURL, apiKey: "fuji_u_1_0000", maxRetries: 0 });
  await expectError(bad.completions.create({ model, prompt, max_tokens: 2 }), OpenAI.AuthenticationError, 401);
  await expectError(bad.models.list(), OpenAI.AuthenticationError, 401);
});

await check("max_tokens: -1 is 400 (BadRequestError)", async () => {
  const e = await expectError(client.completions.create({ model, prompt, max_tokens: -1 }),
                              OpenAI.BadRequestError, 400);
  expect(e.param === "max_tokens", `param ${e.param}`);
});

await check("an unknown model is 404 (NotFoundError)", async () => {
  const e = await expectError(client.completions.create({ model: "no-such-model", prompt, max_tokens: 2 }),
                              OpenAI.NotFoundError, 404);
  expect(e.code === "model_not_found", `code ${e.code}`);
});

await check("chat on a model without a chat template is 400", async () => {
  const e = await expectError(
    client.chat.completions.create({ model, messages: [{ role: "user", content: "hello" }], max_tokens: 4 }),
    OpenAI.BadRequestError, 400);
  expect(/chat template/.test(e.message), e.message);
});

await check("chat on a model with a chat template, whole and streamed", async () => {
  const messages = [
    { role: "system", content: "You answer briefly." },
    { role: "user", content: "Where is Mt. Fuji?" },
  ];
  const r = await client.chat.completions.create({ model: chatModel, messages, max_tokens: 8, temperature: 0 });
  expect(r.object === "chat.completion", `object ${r.object}`);
  expect(r.choices[0].message.role === "assistant", JSON.stringify(r.choices[0]));
  expect(typeof r.choices[0].message.content === "string", JSON.stringify(r.choices[0]));
  expect(r.usage.prompt_tokens > 10, `the rendered prompt has the template's text: ${JSON.stringify(r.usage)}`);
  const stream = await client.chat.completions.create({
    model: chatModel, messages, max_tokens: 8, temperature: 0, stream: true,
  });
  const { text, finish } = await streamedText(stream, (c) => c.delta?.content);
  const whole = r.choices[0].message.content;
  expect(text === whole, `streamed ${JSON.stringify(text)} != ${JSON.stringify(whole)}`);
  expect(finish === r.choices[0].finish_reason, `finish_reason ${finish}`);
});

console.log(failed === 0 ? "all checks passed" : `${failed} check(s) failed`);
process.exit(failed === 0 ? 0 : 1);
