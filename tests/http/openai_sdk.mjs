// The HTTP API against the official openai npm package: completions and chat, streamed and not,
// errors as the SDK's error classes. Run by run_openai_sdk.sh against a real `troupe serve`.
// Usage: node openai_sdk.mjs BASE_URL MODEL_ID REFERENCE   (REFERENCE: `troupe generate` output)
import OpenAI from 'openai';

const [baseURL, model, reference] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: 'not-checked', maxRetries: 0, timeout: 60_000 });
let failures = 0;
function check(cond, what, detail = '') {
  console.log(`${cond ? 'ok  ' : 'FAIL'} ${what}${cond ? '' : ': ' + detail}`);
  if (!cond) failures++;
}
const trimEnd = (s) => s.replace(/\n+$/, '');
const prompt = 'Once upon a time';

// Completions, not streamed: the text `troupe generate` prints after the prompt.
const c = await client.completions.create({ model, prompt, max_tokens: 32, temperature: 0 });
check(trimEnd(prompt + c.choices[0].text) === reference, 'completion equals troupe generate',
      JSON.stringify(c.choices[0].text));
check(c.object === 'text_completion' && c.usage.completion_tokens === 32 && c.choices[0].finish_reason === 'length',
      'completion object, usage and finish_reason', JSON.stringify(c));

// Completions, streamed: the same text.
const stream = await client.completions.create({ model, prompt, max_tokens: 32, temperature: 0, stream: true });
let text = '';
let chunks = 0;
let finish = null;
for await (const chunk of stream) {
  chunks++;
  text += chunk.choices[0]?.text ?? '';
  finish = chunk.choices[0]?.finish_reason ?? finish;
}
check(text === c.choices[0].text, 'streamed completion equals the non-streamed one', JSON.stringify(text));
check(chunks > 2 && finish === 'length', 'several chunks, the last with finish_reason', `${chunks} ${finish}`);

// Chat, not streamed and streamed (with the usage chunk).
const messages = [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content: prompt }];
const chat = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0 });
const content = chat.choices[0].message.content;
check(chat.object === 'chat.completion' && chat.choices[0].message.role === 'assistant' && content.length > 0,
      'chat completion', JSON.stringify(chat));
const chatStream = await client.chat.completions.create({
  model, messages, max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true },
});
let streamed = '';
let usage = null;
for await (const chunk of chatStream) {
  if (chunk.choices.length > 0) streamed += chunk.choices[0].delta?.content ?? '';
  if (chunk.usage) usage = chunk.usage;
}
check(streamed === content, 'streamed chat equals the non-streamed one', JSON.stringify(streamed));
check(usage !== null && usage.completion_tokens === chat.usage.completion_tokens, 'usage chunk', JSON.stringify(usage));

// Models and errors.
const models = await client.models.list();
check(models.data.length === 1 && models.data[0].id === model, 'models.list', JSON.stringify(models.data));
try {
  await client.completions.create({ model: 'no-such-model', prompt, max_tokens: 2 });
  check(false, 'unknown model is refused', 'no error');
} catch (e) {
  check(e instanceof OpenAI.NotFoundError && e.code === 'model_not_found', 'unknown model: NotFoundError', String(e));
}
try {
  await client.completions.create({ model, prompt, max_tokens: 2, temperature: 'hot' });
  check(false, 'bad temperature is refused', 'no error');
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && e.param === 'temperature', 'bad temperature: BadRequestError',
        String(e));
}

if (failures > 0) {
  console.log(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('all checks passed');
