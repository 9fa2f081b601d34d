/**
 * The name a connection announces in its first bytes: TLS ClientHello SNI or the HTTP/1 Host header.
 * Bounded, defensive parsing of guest bytes; "need more" vs "none" so the caller can wait a little.
 */

export const PEEK_MAX = 4096;

/** string = the name; null = this cannot carry one; undefined = need more bytes. */
export function announcedName(b: Buffer): string | null | undefined {
  if (b.length === 0) return undefined;
  if (b[0] === 0x16) return sni(b);
  if (/^[A-Z]{3,7} /.test(b.subarray(0, 8).toString("latin1"))) return httpHost(b);
  return null;
}

function clean(name: string): string | null {
  const n = name.toLowerCase().replace(/\.$/, "");
  return /^[a-z0-9_.-]{1,253}$/.test(n) ? n : null;
}

function httpHost(b: Buffer): string | null | undefined {
  const s = b.subarray(0, PEEK_MAX).toString("latin1");
  const end = s.indexOf("\r\n\r\n");
  const head = end >= 0 ? s.slice(0, end) : s;
  const m = /\r\nhost:[ \t]*([^\r\n]*)/i.exec(head);
  if (m) {
    const v = m[1]!.trim();
    const host = v.startsWith("[") ? v.slice(1, v.indexOf("]")) : v.replace(/:\d+$/, "");
    return clean(host);
  }
  return end >= 0 || b.length >= PEEK_MAX ? null : undefined;
}

function sni(b: Buffer): string | null | undefined {
  if (b.length < 5) return undefined;
  const recLen = b.readUInt16BE(3);
  if (b.length < 5 + recLen) return b.length >= PEEK_MAX ? null : undefined;
  const h = b.subarray(5, 5 + recLen);
  if (h.length < 4 || h[0] !== 1) return null;
  let o = 4 + 2 + 32; // handshake header, version, random
  if (o + 1 > h.length) return null;
  o += 1 + h[o]!; // session id
  if (o + 2 > h.length) return null;
  o += 2 + h.readUInt16BE(o); // cipher suites
  if (o + 1 > h.length) return null;
  o += 1 + h[o]!; // compression methods
  if (o + 2 > h.length) return null;
  const extEnd = Math.min(h.length, o + 2 + h.readUInt16BE(o));
  o += 2;
  while (o + 4 <= extEnd) {
    const type = h.readUInt16BE(o);
    const len = h.readUInt16BE(o + 2);
    o += 4;
    if (o + len > extEnd) return null;
    if (type === 0 && len >= 5) {
      const nameType = h[o + 2];
      const nameLen = h.readUInt16BE(o + 3);
      if (nameType !== 0 || o + 5 + nameLen > o + len) return null;
      return clean(h.subarray(o + 5, o + 5 + nameLen).toString("latin1"));
    }
    o += len;
  }
  return null;
}
