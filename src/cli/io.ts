/**
 * What the CLI reads and writes instead of the process's own streams, environment and signals,
 * so that tests run it in-process (`main(argv, io)`) and bin.ts passes the real ones.
 */
import type { Readable, Writable } from 'node:stream';

export interface CliIo {
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable & { isTTY?: boolean };
  stdin?: Readable | undefined;
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal | undefined;
}
