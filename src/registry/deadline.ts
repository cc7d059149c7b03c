/**
 * Deadlines for registry exchanges. The idle timeout (undici's bodyTimeout) never fires on a
 * server that sends one byte every 20 s, so a response's headers, and the whole body of a
 * document (manifest, index, token answer, image config), must also arrive within a fixed time
 * of the request (issue 11). Layers keep only the idle timeout: they may take hours.
 */
import { PullUnpackError } from '../errors.js';

/** Default time for a response's headers, and for a whole document, to arrive: 60 s. */
export const DEFAULT_DOCUMENT_TIMEOUT_MS = 60_000;

/** The abort reason of a request whose deadline passed. */
export class DeadlineExpired extends Error {
  readonly ms: number;

  constructor(ms: number) {
    super(`not complete within ${formatSeconds(ms)}`);
    this.name = 'DeadlineExpired';
    this.ms = ms;
  }
}

function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}

/**
 * An AbortSignal for one exchange: fires `ms` after it was made, or when `parent` (the
 * caller's signal) fires. Settled once its response is done with, or handed over to a body
 * that the caller streams.
 */
export class Deadline {
  readonly signal: AbortSignal;
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private readonly parent: AbortSignal | undefined;
  private readonly followParent = (): void => this.controller.abort(this.parent?.reason);
  private handedOver = false;

  constructor(ms: number, parent: AbortSignal | undefined) {
    this.signal = this.controller.signal;
    this.parent = parent;
    this.timer = setTimeout(() => this.controller.abort(new DeadlineExpired(ms)), ms);
    this.timer.unref();
    if (parent?.aborted) this.followParent();
    else parent?.addEventListener('abort', this.followParent, { once: true });
  }

  /** True when the clock ran out (not when the caller aborted). */
  get expired(): boolean {
    return this.signal.aborted && this.signal.reason instanceof DeadlineExpired;
  }

  /**
   * Leaves the deadline to `body`, a response body the caller streams: released when it closes.
   * The clock keeps running over the body only when it is a document (`keepClock`).
   */
  handOver(body: NodeJS.EventEmitter, keepClock: boolean): void {
    this.handedOver = true;
    if (!keepClock) clearTimeout(this.timer);
    body.once('close', () => this.release());
  }

  /** Ends the clock and lets go of the caller's signal, unless the deadline was handed over. */
  settle(): void {
    if (!this.handedOver) this.release();
  }

  private release(): void {
    clearTimeout(this.timer);
    this.parent?.removeEventListener('abort', this.followParent);
  }
}

/** The NETWORK error for a response that did not arrive in time; not retried. */
export function tooSlowError(host: string, what: string, reason: DeadlineExpired): PullUnpackError {
  return new PullUnpackError('NETWORK', `${host} sent ${what} too slowly: ${reason.message}`, {
    cause: reason,
    hint: 'the server or the network is too slow or stalling on purpose; a library caller can raise transport.documentTimeout',
  });
}
