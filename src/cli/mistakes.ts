/**
 * Likely mistakes on a pull's command line, recognised so the user hears what they probably
 * meant: a first word close to a command (`inspekt`). An IMAGE is always tried first: the guess
 * is only added to the error of a pull that failed.
 */
import { isPullUnpackError, PullUnpackError } from '../errors.js';
import { COMMAND_WORDS } from './args.js';
import { closestNames } from './similar.js';

/**
 * `err` with a did-you-mean for `firstWord` added to its hint when that word, taken as IMAGE,
 * is close to a command (`pull-unpack inspekt alpine` failed to pull an image "inspekt").
 */
export function withCommandGuess(err: unknown, firstWord: string): unknown {
  if (!isPullUnpackError(err) || firstWord.startsWith('-')) return err;
  const [guess] = closestNames(firstWord, COMMAND_WORDS);
  if (guess === undefined) return err;
  const hint = `did you mean 'pull-unpack ${guess}'? ("${firstWord}" was taken as an IMAGE)`;
  return new PullUnpackError(err.code, err.message, { hint: err.hint ? `${err.hint}; ${hint}` : hint, cause: err });
}
