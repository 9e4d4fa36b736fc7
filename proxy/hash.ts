/**
 * Hashing for consistent hashing and sticky fallbacks. FNV-1a over the UTF-16
 * code units, finished with MurmurHash3's fmix32 so that keys differing in one
 * character spread over the whole 32-bit range (FNV alone clusters short keys).
 * Not cryptographic: a client can choose its own cookie and pick its backend,
 * which is no more than what it could do by connecting again.
 */
export function hash32(s: string, seed = 0): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return fmix32(h);
}

export function fmix32(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
