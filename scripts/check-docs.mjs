// Validates docs/asyncapi.yaml (@asyncapi/parser, with schemas/ resolved
// from disk) and docs/openapi.yaml (@apidevtools/swagger-parser). Exits 1
// naming every error. Run by scripts/check-docs.sh.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Parser, fromFile } from '@asyncapi/parser';
import SwaggerParser from '@apidevtools/swagger-parser';

const root = resolve(process.argv[2] ?? '.');
let failed = false;

const parser = new Parser();
const asyncapiPath = resolve(root, 'docs/asyncapi.yaml');
const { document, diagnostics } = await fromFile(parser, asyncapiPath).parse();
// Severity 0 is an error; warnings and hints are printed but do not fail.
for (const d of diagnostics) {
  const where = (d.path ?? []).join('.');
  const line = `asyncapi: ${['error', 'warning', 'info', 'hint'][d.severity] ?? d.severity} ${d.code} at ${where}: ${d.message}`;
  if (d.severity === 0) { failed = true; console.error(line); } else { console.log(line); }
}
if (!document) {
  failed = true;
  console.error('asyncapi: the document did not parse');
} else {
  const messages = document.allMessages().all().length;
  const channels = document.allChannels().all().length;
  const operations = document.allOperations().all().length;
  console.log(`asyncapi: ${asyncapiPath} is valid AsyncAPI ${document.version()}: ${channels} channels, ${operations} operations, ${messages} messages`);
}

try {
  const api = await SwaggerParser.validate(resolve(root, 'docs/openapi.yaml'));
  console.log(`openapi: docs/openapi.yaml is valid OpenAPI ${api.openapi}: ${Object.keys(api.paths).length} paths`);
} catch (e) {
  failed = true;
  console.error(`openapi: ${e.message}`);
}
JSON.parse(readFileSync(resolve(root, 'schemas/intent.schema.json'), 'utf8'));
process.exit(failed ? 1 : 0);
