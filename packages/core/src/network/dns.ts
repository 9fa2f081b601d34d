/**
 * The little DNS the host speaks for the guest's stub (RFC 1035): parse one question, answer A/AAAA
 * from the host's own resolver. Input is hostile: every length is checked, nothing is trusted.
 */

export const DNS_A = 1;
export const DNS_AAAA = 28;
export const RCODE_NOERROR = 0;
export const RCODE_FORMERR = 1;
export const RCODE_SERVFAIL = 2;
export const RCODE_NXDOMAIN = 3;
export const RCODE_REFUSED = 5;

export interface DnsQuestion {
  id: number;
  flags: number;
  /** Lower-case name without the trailing dot. */
  name: string;
  qtype: number;
  qclass: number;
  /** The question section's bytes (name + type + class), echoed in the answer. */
  raw: Buffer;
}

/** Parses a query with exactly one question; null when malformed (no compression in questions). */
export function parseQuery(q: Buffer): DnsQuestion | null {
  if (q.length < 12 || q.length > 512) return null;
  const flags = q.readUInt16BE(2);
  if (flags & 0x8000) return null; // a response, not a query
  if (q.readUInt16BE(4) !== 1) return null;
  let off = 12;
  const labels: string[] = [];
  for (;;) {
    if (off >= q.length) return null;
    const len = q[off]!;
    off++;
    if (len === 0) break;
    if (len > 63 || off + len > q.length) return null;
    const label = q.subarray(off, off + len).toString("latin1");
    if (!/^[A-Za-z0-9_-]+$/.test(label)) return null;
    labels.push(label.toLowerCase());
    off += len;
  }
  if (off + 4 > q.length) return null;
  const name = labels.join(".");
  if (name.length === 0 || name.length > 253) return null;
  return {
    id: q.readUInt16BE(0),
    flags,
    name,
    qtype: q.readUInt16BE(off),
    qclass: q.readUInt16BE(off + 2),
    raw: Buffer.from(q.subarray(12, off + 4)),
  };
}

function ipv4(a: string): Buffer {
  return Buffer.from(a.split(".").map(Number));
}

function ipv6(a: string): Buffer {
  const out = Buffer.alloc(16);
  const [h, r] = a.includes("::") ? a.split("::") : [a, undefined];
  const head = h ? h.split(":") : [];
  const rest = r ? r.split(":") : [];
  const groups =
    r === undefined ? head : [...head, ...Array(8 - head.length - rest.length).fill("0"), ...rest];
  for (const [i, g] of groups.entries()) out.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  return out;
}

/** A response to q with rcode and the given addresses (A or AAAA records per q.qtype). */
export function buildAnswer(q: DnsQuestion, rcode: number, addrs: readonly string[] = [], ttl = 60): Buffer {
  const rrs: Buffer[] = [];
  for (const a of addrs) {
    const data = q.qtype === DNS_A ? ipv4(a) : ipv6(a);
    const rr = Buffer.alloc(12 + data.length);
    rr.writeUInt16BE(0xc00c, 0); // pointer to the question's name
    rr.writeUInt16BE(q.qtype, 2);
    rr.writeUInt16BE(1, 4);
    rr.writeUInt32BE(ttl, 6);
    rr.writeUInt16BE(data.length, 10);
    data.copy(rr, 12);
    rrs.push(rr);
    if (rrs.length >= 32) break;
  }
  const h = Buffer.alloc(12);
  h.writeUInt16BE(q.id, 0);
  // QR, the query's opcode and RD, RA, rcode
  h.writeUInt16BE(0x8000 | (q.flags & 0x7900) | 0x0080 | (rcode & 0xf), 2);
  h.writeUInt16BE(1, 4);
  h.writeUInt16BE(rrs.length, 6);
  return Buffer.concat([h, q.raw, ...rrs]);
}

/** A FORMERR answer echoing only the header id of a query we could not parse, or null. */
export function formErr(q: Buffer): Buffer | null {
  if (q.length < 12) return null;
  const h = Buffer.alloc(12);
  h.writeUInt16BE(q.readUInt16BE(0), 0);
  h.writeUInt16BE(0x8000 | RCODE_FORMERR, 2);
  return h;
}
