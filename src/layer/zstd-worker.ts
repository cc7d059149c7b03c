/**
 * fzstd on a worker thread. fzstd is pure JavaScript: on the main thread its decoding competed
 * with the layer applier for one core (a zstd layer unpacked about twice as slowly as a gzip
 * one, whose inflate runs on libuv's thread pool). Here it decodes on its own thread while the
 * main thread applies what came before.
 *
 * The main thread cuts the stream into frame headers and whole blocks (zstd-frames.ts) and
 * sends them in batches of at most BATCH_UNITS; each block decodes to at most 128 KiB, so a
 * batch's output is bounded whatever the compression ratio. At most IN_FLIGHT batches are out
 * at a time, and a batch's output is handed on (honouring backpressure) before another batch
 * goes out: memory stays bounded, and a decompression bomb is as slow as its consumer.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

const BATCH_UNITS = 32;
const IN_FLIGHT = 2;
const EMIT_BYTES = 256 * 1024;

/**
 * The worker: decodes each batch with one fzstd stream and answers with the output as one
 * transferred buffer. Plain CommonJS, evaluated from this string, so that it runs the same from
 * dist/ and from the TypeScript sources under test.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { Decompress } = require(workerData.fzstd);
let pieces = [];
let size = 0;
const decoder = new Decompress((data) => {
  if (data.length === 0) return;
  pieces.push(data);
  size += data.length;
});
parentPort.on('message', ({ input, lengths, end }) => {
  try {
    let offset = 0;
    for (const length of lengths) {
      decoder.push(input.subarray(offset, offset + length));
      offset += length;
    }
    if (end) decoder.push(new Uint8Array(0), true);
    // fzstd may hand out views of its own window: copy them into one buffer this thread gives away.
    const output = new Uint8Array(size);
    for (let i = 0, at = 0; i < pieces.length; at += pieces[i].length, i++) output.set(pieces[i], at);
    pieces = [];
    size = 0;
    parentPort.postMessage({ output }, [output.buffer]);
  } catch (err) {
    parentPort.postMessage({ error: { message: String(err && err.message || err), code: err && err.code } });
  }
});
`;

const fzstdPath = createRequire(import.meta.url).resolve('fzstd');

/** Hands one piece of output on; the promise, when there is one, resolves once it may go on. */
export type Emit = (out: Uint8Array) => Promise<void> | undefined;

/** A decoding failure from the worker, with fzstd's error code (5: the input ended early). */
export class FzstdError extends Error {
  readonly code: unknown;
  constructor(message: string, code: unknown) {
    super(message);
    this.code = code;
  }
}

interface Reply {
  output?: Uint8Array;
  error?: { message: string; code: unknown };
}

export class FzstdWorker {
  private readonly worker: Worker;
  private readonly emit: Emit;
  private units: Buffer[] = [];
  private unitBytes = 0;
  /** Replies not yet received, in order; each waiter gets the next one. */
  private readonly replies: Reply[] = [];
  private waiter: ((reply: Reply) => void) | undefined;
  private inFlight = 0;

  constructor(emit: Emit) {
    this.emit = emit;
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { fzstd: fzstdPath } });
    this.worker.on('message', (reply: Reply) => this.receive(reply));
    this.worker.on('error', (err) => this.receive({ error: { message: err.message, code: undefined } }));
    this.worker.on('exit', () => this.receive({ error: { message: 'the zstd worker stopped', code: undefined } }));
    // Only a pending batch keeps the process alive, not an idle worker.
    this.worker.unref();
  }

  /** Queues one frame header or block; sends full batches, waiting while IN_FLIGHT are out. */
  async push(unit: Buffer): Promise<void> {
    this.units.push(unit);
    this.unitBytes += unit.length;
    if (this.units.length >= BATCH_UNITS) await this.send(false);
  }

  /** Sends what is queued with the end mark and hands on every output that is still to come. */
  async end(): Promise<void> {
    await this.send(true);
    while (this.inFlight > 0) await this.handOnNext();
    await this.worker.terminate();
  }

  destroy(): void {
    void this.worker.terminate();
  }

  private async send(end: boolean): Promise<void> {
    while (this.inFlight >= IN_FLIGHT) await this.handOnNext();
    const input = new Uint8Array(this.unitBytes);
    const lengths = this.units.map((unit) => unit.length);
    let at = 0;
    for (const unit of this.units) {
      input.set(unit, at);
      at += unit.length;
    }
    this.units = [];
    this.unitBytes = 0;
    this.inFlight++;
    this.worker.ref();
    this.worker.postMessage({ input, lengths, end }, [input.buffer]);
  }

  /** Waits for the oldest batch's output and emits it. */
  private async handOnNext(): Promise<void> {
    const reply = this.replies.shift() ?? (await new Promise<Reply>((resolve) => (this.waiter = resolve)));
    this.inFlight--;
    if (this.inFlight === 0) this.worker.unref();
    if (reply.error) throw new FzstdError(reply.error.message, reply.error.code);
    // In pieces, so that a consumer's backpressure holds the buffered output near its mark.
    const output = Buffer.from(reply.output!.buffer, reply.output!.byteOffset, reply.output!.length);
    for (let at = 0; at < output.length; at += EMIT_BYTES) await this.emit(output.subarray(at, at + EMIT_BYTES));
  }

  private receive(reply: Reply): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    if (waiter) waiter(reply);
    else this.replies.push(reply);
  }
}
