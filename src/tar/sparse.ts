/**
 * GNU sparse files in PAX form, as GNU tar `--sparse --format=posix` writes them (formats 0.0,
 * 0.1 and 1.0) and as Go's archive/tar expands them (reader.go readGNUSparsePAXHeaders,
 * readGNUSparseMap0x1, readGNUSparseMap1x0; common.go validateSparseEntries), which is what
 * containerd and umoci write: the file's real name and size, and its data fragments; the rest
 * of the file is holes. The archive stores the fragments' data back to back.
 *
 * Whatever Go would not expand exactly so is refused (TarFormatError): an unknown version, GNU
 * sparse records Go ignores (GNU tar would still expand them), a map that is malformed, out of
 * order, overlapping or past the real size, or fragments that do not add up to the stored data.
 */
import { TarFormatError } from './format-error.js';
import type { SparseFragment } from './header.js';
import { paxNumber, SPARSE_MAP } from './pax.js';

/** Sparse maps larger than this are refused (a map of ~50,000 fragments). */
const MAX_SPARSE_MAP_BYTES = 1024 * 1024;
const PREFIX = 'GNU.sparse.';

/** What an entry's PAX records say about a sparse file. */
export interface SparseRecords {
  /** 1.0 keeps the map at the start of the entry's data; 0.0 and 0.1 in the records. */
  version: '0.x' | '1.0';
  /** The file's real size, or null when the records do not give it. */
  realSize: number | null;
  /** The 0.x map, or null for 1.0 (read from the data with SparseMapReader). */
  map: SparseFragment[] | null;
}

/** The sparse file the records describe; null when they hold no GNU.sparse record. */
export function sparseRecords(text: Record<string, string>): SparseRecords | null {
  let any = false;
  for (const key in text) {
    if (key.startsWith(PREFIX)) {
      any = true;
      break;
    }
  }
  if (!any) return null;
  const major = text[`${PREFIX}major`] ?? '';
  const minor = text[`${PREFIX}minor`] ?? '';
  let version: SparseRecords['version'];
  if (major === '0' && (minor === '0' || minor === '1')) version = '0.x';
  else if (major === '1' && minor === '0') version = '1.0';
  else if (major !== '' || minor !== '')
    throw new TarFormatError(`GNU sparse format ${major}.${minor} is not one Go reads (0.0, 0.1, 1.0)`);
  // 0.0 and 0.1 have no version records: Go knows them by their map.
  else if ((text[SPARSE_MAP] ?? '') !== '') version = '0.x';
  else throw new TarFormatError('GNU sparse records without a map (Go reads the entry as a plain file, GNU tar as a sparse one)');
  const size = text[`${PREFIX}size`] || text[`${PREFIX}realsize`] || '';
  const realSize = size === '' ? null : paxNumber(size, 'GNU.sparse.size');
  return { version, realSize, map: version === '1.0' ? null : mapFromRecords(text) };
}

function mapFromRecords(text: Record<string, string>): SparseFragment[] {
  const count = paxNumber(text[`${PREFIX}numblocks`] ?? '', 'GNU.sparse.numblocks');
  const mapText = text[SPARSE_MAP] ?? '';
  const numbers = mapText === '' ? [] : mapText.split(',');
  if (numbers.length !== 2 * count) throw new TarFormatError('GNU sparse map does not hold GNU.sparse.numblocks fragments');
  const map: SparseFragment[] = [];
  for (let i = 0; i < numbers.length; i += 2) {
    map.push({ offset: paxNumber(numbers[i]!, 'sparse offset'), length: paxNumber(numbers[i + 1]!, 'sparse length') });
  }
  return map;
}

/**
 * Reads a 1.0 map from the start of an entry's data, one block at a time: a count, then an
 * offset and a length per fragment, each a decimal number on its own line, padded to a block.
 */
export class SparseMapReader {
  private text = '';
  private newlines = 0;
  private needed = 1;
  private count = -1;
  /** Bytes of the entry's data taken by the map so far. */
  bytes = 0;

  /** Feeds the next data block; true once the map is complete (the rest is the file's data). */
  feed(block: Buffer): boolean {
    this.bytes += block.length;
    if (this.bytes > MAX_SPARSE_MAP_BYTES) throw new TarFormatError('GNU sparse map larger than 1 MiB');
    const text = block.toString('latin1');
    this.text += text;
    for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) this.newlines++;
    if (this.count < 0 && this.newlines >= 1) {
      this.count = paxNumber(this.text.slice(0, this.text.indexOf('\n')), 'sparse map count');
      this.needed = 1 + 2 * this.count;
    }
    return this.count >= 0 && this.newlines >= this.needed;
  }

  /** The fragments, once feed returned true. */
  map(): SparseFragment[] {
    const lines = this.text.split('\n', this.needed);
    const map: SparseFragment[] = [];
    for (let i = 1; i < lines.length; i += 2) {
      map.push({ offset: paxNumber(lines[i]!, 'sparse offset'), length: paxNumber(lines[i + 1]!, 'sparse length') });
    }
    return map;
  }
}

/**
 * Checks a map as Go does before reading (in order, no overlap, inside `realSize`) and as its
 * reads end (the fragments hold exactly the `dataBytes` the archive stores).
 */
export function checkSparseMap(map: SparseFragment[], realSize: number, dataBytes: number): void {
  let end = 0;
  let total = 0;
  for (const { offset, length } of map) {
    if (offset < end) throw new TarFormatError('GNU sparse map fragments overlap or are out of order');
    end = offset + length;
    total += length;
  }
  if (end > realSize) throw new TarFormatError('GNU sparse map reaches past the file size');
  if (total !== dataBytes) throw new TarFormatError(`GNU sparse map names ${total} bytes of data, the archive stores ${dataBytes}`);
}
