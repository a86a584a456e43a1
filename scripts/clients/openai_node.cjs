// Node's `openai` package: a chat completion, a streamed one and a Responses call, printed for
// scripts/try_clients.py like the Python clients (see report.py). Modules come from NODE_PATH
// (.clients-node/node_modules).
//
// Proxies: Node's fetch ignores HTTP_PROXY/HTTPS_PROXY before Node 24 (24 reads them when
// NODE_USE_ENV_PROXY=1). There, undici's EnvHttpProxyAgent, which reads HTTP_PROXY, HTTPS_PROXY
// and NO_PROXY, is handed to the SDK as its fetch dispatcher (npm undici 7 works with the fetch
// bundled in Node 20). The mitmproxy CA is trusted through NODE_EXTRA_CA_CERTS (read at startup).
'use strict';

const { parseArgs } = require('node:util');
const { OpenAI } = require('openai');
const { VERSION } = require('openai/version');

const MARK = '@@try-clients ';
const emit = (document) => console.log(MARK + JSON.stringify(document));

function clientOptions(baseURL) {
  const options = baseURL ? { baseURL } : {}; // absent: https://api.openai.com/v1
  const major = Number(process.versions.node.split('.')[0]);
  const proxied = ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy'].some((n) => process.env[n]);
  if (major < 24 && proxied) {
    const { EnvHttpProxyAgent } = require('undici');
    options.fetchOptions = { dispatcher: new EnvHttpProxyAgent() };
  }
  return options;
}

async function call(name, expect, run) {
  try {
    const [text, note] = await run();
    if (text.includes(`Hello from ${expect} `)) {
      emit({ call: name, ok: true, detail: [expect, note].filter(Boolean).join(', ') });
    } else {
      emit({ call: name, ok: false, detail: `unexpected answer ${JSON.stringify(text.slice(0, 120))}` });
    }
  } catch (e) {
    const cause = e.cause ? ` (cause: ${e.cause.code || e.cause.message || e.cause})` : '';
    emit({ call: name, ok: false, detail: `${e.constructor.name}: ${e.message}${cause}` });
  }
}

async function main() {
  const { values } = parseArgs({
    options: { 'base-url': { type: 'string' }, model: { type: 'string' }, expect: { type: 'string' } },
  });
  emit({ version: `${VERSION} (Node ${process.versions.node})` });
  const client = new OpenAI(clientOptions(values['base-url'])); // key from OPENAI_API_KEY
  const model = values.model;
  const messages = [{ role: 'user', content: 'Say hello' }];

  await call('chat', values.expect, async () => {
    const answer = await client.chat.completions.create({ model, messages });
    return [answer.choices[0].message.content || '', ''];
  });
  await call('chat stream', values.expect, async () => {
    const stream = await client.chat.completions.create({ model, messages, stream: true });
    let text = '';
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      text += chunk.choices[0]?.delta?.content || '';
    }
    return [text, `${chunks} chunks`];
  });
  await call('responses', values.expect, async () => {
    const answer = await client.responses.create({ model, input: 'Say hello' });
    return [answer.output_text, ''];
  });
}

main();
