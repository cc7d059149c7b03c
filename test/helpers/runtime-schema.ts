/**
 * The OCI runtime-spec JSON schema (testdata/runtime-spec-schema, draft-04) compiled once with
 * ajv, for every test that checks a generated config.json.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import AjvDraft04 from 'ajv-draft-04';

const schemaDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'testdata', 'runtime-spec-schema');
// ajv-draft-04 is CommonJS; under NodeNext its class is the `default` property of module.exports.
const ajv = new AjvDraft04.default({ strict: false, allErrors: true });
// The schema files carry no ids: they reference each other by file name ("defs.json#/..."),
// so each is registered under its file name and relative refs resolve against that key.
for (const file of readdirSync(schemaDir).filter((f) => f.endsWith('.json') && f !== 'config-schema.json')) {
  ajv.addSchema(JSON.parse(readFileSync(join(schemaDir, file), 'utf8')) as object, file);
}

/** The compiled config-schema.json validator; after a call, `.errors` holds what failed. */
export const validateConfig = ajv.compile(JSON.parse(readFileSync(join(schemaDir, 'config-schema.json'), 'utf8')) as object);

/** The schema errors of `spec` after a JSON round trip (as a runtime reads it); [] when valid. */
export function runtimeSchemaErrors(spec: unknown): unknown[] {
  const ok = validateConfig(JSON.parse(JSON.stringify(spec)));
  return ok ? [] : [...(validateConfig.errors ?? [{ message: 'invalid, with no error detail' }])];
}
