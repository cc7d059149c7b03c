/**
 * What a successful pull prints: one line saying what was pulled and where, and after --bundle
 * the runc command that runs it.
 */
import type { PullResult } from '../pull.js';
import { escapeControl } from './escape.js';
import { formatBytes } from './progress-render.js';

export interface PullReportOptions {
  /** The pull wrote a runc bundle: say how to run it. */
  bundle?: boolean | undefined;
  env: NodeJS.ProcessEnv;
  /** The user's uid (for a runc state directory when XDG_RUNTIME_DIR is unset). */
  uid?: number | undefined;
}

/** The lines a successful pull prints, each escaped, with a final newline. */
export function formatPullReport(r: PullResult & { rootless?: boolean }, dir: string, options: PullReportOptions): string {
  const total = r.layers.reduce((n, l) => n + l.size, 0);
  const platform = r.platform ? ` ${r.platform}` : '';
  const layers = `${r.layers.length} layer${r.layers.length === 1 ? '' : 's'}`;
  const lines = [`${r.reference}${platform} ${r.manifestDigest} -> ${dir} (${layers}, ${formatBytes(total)})`];
  if (options.bundle) lines.push(`run it: ${runcCommand(dir, containerName(r.reference), r.rootless ?? false, options)}`);
  return `${lines.map(escapeControl).join('\n')}\n`;
}

/**
 * `runc run` for the bundle at `dir`. A bundle made as root for root needs root to run: sudo.
 * A rootless one runs as the user who made it, with no --rootless flag: runc's default (auto)
 * is rootless when not root, and root runs a rootless config as it is. runc keeps its state in
 * $XDG_RUNTIME_DIR/runc for a user, else in /run/runc, which only root may write: a user
 * without XDG_RUNTIME_DIR needs --root.
 */
function runcCommand(dir: string, name: string, rootless: boolean, options: PullReportOptions): string {
  const run = `run --bundle ${shellWord(dir)} ${name}`;
  if (!rootless) return `sudo runc ${run}`;
  if (options.uid === 0 || options.env['XDG_RUNTIME_DIR']) return `runc ${run}`;
  return `runc --root ${shellWord(`/tmp/runc-${options.uid ?? 'user'}`)} ${run}`;
}

/** A container id runc accepts (letters, digits, `_+-.`), from the repository's last component. */
function containerName(reference: string): string {
  const path = reference.split('@')[0]!;
  const last = path.slice(path.lastIndexOf('/') + 1).replace(/:[^:]*$/, '');
  const name = last.replace(/[^\w+.-]/g, '-').replace(/^[.-]+/, '');
  return name || 'container';
}

/** `text` as one word for a POSIX shell: as is when it is plain, else single-quoted. */
function shellWord(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, "'\\''")}'`;
}
