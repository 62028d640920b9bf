// An OpenFeature application: the server SDK with the official OFREP provider, pointed at
// Envoy running abmesh. Evaluates checkout-v2 (boolean values) and search-ranker (string) for
// each targeting key in OFREP_KEYS and prints, per key, each flag's evaluation details as
// JSON; every HTTP response the provider receives is appended to OFREP_RECORD (one JSON line:
// path, status, body) for tests/e2e/ofrep_openapi.py. Run by tests/e2e/ofrep.rs.
import { appendFileSync } from 'node:fs';
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';

const [baseUrl] = process.argv.slice(2);
const keys = JSON.parse(process.env.OFREP_KEYS);
const record = process.env.OFREP_RECORD;

const recordingFetch = async (request) => {
  const response = await fetch(request);
  const body = await response.clone().text();
  const line = { path: new URL(request.url).pathname, status: response.status, body };
  appendFileSync(record, JSON.stringify(line) + '\n');
  return response;
};

await OpenFeature.setProviderAndWait(new OFREPProvider({ baseUrl, fetchImplementation: recordingFetch }));
const client = OpenFeature.getClient();
const details = (d) => ({ value: d.value, variant: d.variant ?? null, reason: d.reason, errorCode: d.errorCode ?? null });
const out = {};
for (let i = 0; i < keys.length; i += 50) {
  const batch = keys.slice(i, i + 50);
  const results = await Promise.all(batch.map(async (targetingKey) => {
    const context = { targetingKey };
    const checkout = await client.getBooleanDetails('checkout-v2', false, context);
    const ranker = await client.getStringDetails('search-ranker', 'code-default', context);
    return [targetingKey, { 'checkout-v2': details(checkout), 'search-ranker': details(ranker) }];
  }));
  for (const [k, v] of results) out[k] = v;
}
process.stdout.write(JSON.stringify(out));
await OpenFeature.close();
