/**
 * The command line's words to option values, with the CLI's own messages: every mistake in the
 * arguments is a USAGE error (exit 2) whose hint points to the command's own --help. An unknown
 * option gets a did-you-mean (`--platfrom` -> `--platform`) or the command it belongs to,
 * instead of node:util parseArgs' text, whose advice to put it after `--` is wrong here: after
 * DIR, `--` starts the bundle's command.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { PullUnpackError } from '../errors.js';
import { closestNames } from './similar.js';

/** The commands with their own usage (`pull` is `pull-unpack IMAGE DIR`). */
export type CommandName = 'pull' | 'inspect' | 'cache' | 'completion' | 'help';

/** The words that name a command when they come first (anything else is an IMAGE). */
export const COMMAND_WORDS: readonly string[] = ['pull', 'inspect', 'cache', 'completion', 'help'];

export type OptionsTable = NonNullable<ParseArgsConfig['options']>;

/** `run 'pull-unpack inspect --help' for usage`, for `command`. */
export function helpPointer(command: CommandName): string {
  return command === 'pull' || command === 'help' ? "run 'pull-unpack --help' for usage" : `run 'pull-unpack ${command} --help' for usage`;
}

/** A mistake in the command line of `command`: exit 2, the hint pointing to its usage unless a better one is given. */
export function usageError(command: CommandName, message: string, hint?: string): PullUnpackError {
  return new PullUnpackError('USAGE', message, { hint: hint ?? helpPointer(command) });
}

/** What parseCommandLine returns: the option values typed from the table, and the positionals. */
export type ParsedLine<T extends OptionsTable> = ReturnType<
  typeof parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: true }>
>;

export interface ParseContext {
  command: CommandName;
  /** The option tables of the other commands, to say where an option belongs. */
  others?: Partial<Record<CommandName, OptionsTable>> | undefined;
}

/**
 * Parses `args` against `options`: the values and positionals, as node:util parseArgs gives them
 * in strict mode. Every option word is checked first, so a mistake is reported in our words.
 */
export function parseCommandLine<T extends OptionsTable>(args: string[], options: T, context: ParseContext): ParsedLine<T> {
  const { tokens } = parseArgs({ args, options, strict: false, allowPositionals: true, tokens: true });
  for (const token of tokens) {
    if (token.kind === 'option') checkOption(token, options, context);
  }
  try {
    return parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: true }>({
      args,
      options,
      strict: true,
      allowPositionals: true,
    });
  } catch (err) {
    const unexpected = /^Unexpected argument '(.*)'/.exec((err as Error).message);
    if (unexpected) throw usageError(context.command, `unexpected argument "${unexpected[1]}"`);
    throw usageError(context.command, (err as Error).message.split('\n')[0]!);
  }
}

interface OptionToken {
  name: string;
  rawName: string;
  value?: string | undefined;
  inlineValue?: boolean | undefined;
}

function checkOption(token: OptionToken, options: OptionsTable, context: ParseContext): void {
  const spec = Object.hasOwn(options, token.name) ? options[token.name] : undefined;
  const { command } = context;
  if (!spec) throw unknownOption(token.rawName, options, context);
  if (spec.type === 'boolean' && token.value !== undefined) {
    throw usageError(command, `${token.rawName} takes no value (got "${token.rawName}=${token.value}")`);
  }
  if (spec.type === 'string' && token.value === undefined) throw usageError(command, `${token.rawName} needs a value`);
  if (spec.type === 'string' && !token.inlineValue && token.value!.startsWith('-') && token.value!.length > 1) {
    throw usageError(
      command,
      `${token.rawName} needs a value, not the option ${token.value}`,
      `a value that starts with "-" is written ${token.rawName}=${token.value}`,
    );
  }
}

function unknownOption(raw: string, options: OptionsTable, context: ParseContext): PullUnpackError {
  const { command, others = {} } = context;
  const where = command === 'pull' ? '' : ` for ${command}`;
  const owner = Object.entries(others).find(([, table]) => isOptionOf(raw, table));
  if (owner) {
    const [other] = owner;
    const belongs = other === 'pull' ? 'an option of a pull (pull-unpack IMAGE DIR)' : `an option of pull-unpack ${other}`;
    return usageError(command, `unknown option ${raw}${where}: it is ${belongs}`);
  }
  const names = Object.entries(options).flatMap(([name, o]) => [`--${name}`, ...(o.short ? [`-${o.short}`] : [])]);
  const [guess] = raw.startsWith('--')
    ? closestNames(
        raw,
        names.filter((n) => n.startsWith('--')),
      )
    : [];
  return usageError(command, `unknown option ${raw}${where}${guess ? ` (did you mean ${guess}?)` : ''}`);
}

function isOptionOf(raw: string, table: OptionsTable): boolean {
  if (raw.startsWith('--')) return Object.hasOwn(table, raw.slice(2));
  return Object.values(table).some((o) => o.short === raw.slice(1));
}
