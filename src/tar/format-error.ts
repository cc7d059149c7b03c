/** A header or record that Go's archive/tar and GNU tar would not read the same way, or not at all. */
export class TarFormatError extends Error {
  override name = 'TarFormatError';
}

/** A tar feature pull-unpack refuses by name (e.g. the old GNU sparse type 'S'). */
export class TarUnsupportedError extends Error {
  override name = 'TarUnsupportedError';
}
