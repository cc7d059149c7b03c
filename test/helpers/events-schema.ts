/**
 * docs/events.schema.json (draft 2020-12) compiled once with ajv: every line of a `--json` run
 * must be one of its events, and `inspect --json` its `inspect` document.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020 from 'ajv/dist/2020.js';

const schemaPath = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'events.schema.json');
const schema = JSON.parse(readFileSync(schemaPath, 'utf8')) as { $id: string };
// ajv's 2020 entry is CommonJS; under NodeNext its class is the `default` property of module.exports.
const ajv = new Ajv2020.default({ strict: true, allErrors: true });
// ajv knows no formats without ajv-formats; `time` also has a pattern, this checks it is a real instant.
ajv.addFormat('date-time', (text: string) => !Number.isNaN(Date.parse(text)));
ajv.addSchema(schema);
const validateEvent = ajv.getSchema(schema.$id)!;
const validateInspect = ajv.getSchema(`${schema.$id}#/$defs/inspect`)!;

/** Each line of `stdout` parsed, with the schema errors of every line that is not a valid event (none when all are). */
export function eventSchemaErrors(stdout: string): { events: Array<Record<string, unknown>>; errors: string[] } {
  const lines = stdout.split('\n').filter((l) => l !== '');
  const events = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  const errors = events.flatMap((e, i) => (validateEvent(e) ? [] : [`line ${i + 1} ${lines[i]}: ${ajv.errorsText(validateEvent.errors)}`]));
  return { events, errors };
}

/** The schema errors of an `inspect --json` document; [] when it is valid. */
export function inspectSchemaErrors(doc: unknown): string[] {
  return validateInspect(doc) ? [] : [ajv.errorsText(validateInspect.errors)];
}
