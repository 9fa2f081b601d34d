/**
 * Host side of the guest network (README "Network"): the agent reports each TCP connect of a guest
 * process (`dial`) and each DNS query of its stub (`dns`); this decides with the VM's policy, dials
 * or resolves itself, and bridges accepted connections to the agent channel. Per VM limits bound
 * what a guest can make the host do.
 */
import { lookup } from "node:dns/promises";
import { EventEmitter } from "node:events";
import { connect, isIP, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import {
  buildAnswer,
  DNS_A,
  DNS_AAAA,
  formErr,
  parseQuery,
  RCODE_NXDOMAIN,
  RCODE_REFUSED,
  RCODE_SERVFAIL,
} from "./dns";
import { announcedName, PEEK_MAX } from "./peek";
import { decide, dnsRefusal, type NetworkPolicy } from "./policy";

/** What core needs from an agent session that announced the `egress` cap (SPEC 6.5). */
export interface EgressPort {
  onDial(cb: (d: { id: number; addr: string; port: number }) => void): void;
  onDns(cb: (q: { id: number; q: Buffer }) => void): void;
  accept(id: number): Promise<Duplex>;
  refuse(id: number, code: string): Promise<void>;
  dnsAnswer(id: number, answer: Buffer): Promise<void>;
}

/** Per-VM limits (README "Network"). */
export const EGRESS_LIMITS = {
  /** Connections open at once (host sockets); more are refused with ECONNREFUSED. */
  maxConnections: 256,
  /** Host dials in progress at once; more are refused. */
  maxPendingDials: 64,
  /** Host connect timeout, ms. */
  dialTimeoutMs: 10_000,
  /** DNS queries answered per second (burst = 2 s worth); more are dropped. */
  dnsPerSecond: 50,
  /** Host lookups in flight at once; more queries are dropped. */
  maxDnsInFlight: 16,
  /** Names remembered per VM for name rules (oldest forgotten first). */
  maxNames: 4096,
  /** Blocked-connection reports per second per VM; the rest are counted in `suppressed`. */
  reportsPerSecond: 10,
};

/** A connection the policy refused (event `network-blocked`). */
export interface NetworkBlockedEvent {
  /** Handle id of the VM (the same for the Vm's whole life). */
  vmId: number;
  /** "addr:port" the guest connected to (or "dns <name>" for refused DNS). */
  destination: string;
  /** Host names this VM resolved to that address. */
  names: string[];
  /** The rule that decided ("none", "always-denied 127.0.0.0/8", "deny *.example.com", "not in allow list", "limit"). */
  rule: string;
  /** Reports dropped by the rate limit since the previous one. */
  suppressed: number;
}

const bus = new EventEmitter();
bus.setMaxListeners(0);

/** Listen for blocked guest connections of every VM of this process (rate-limited per VM). */
export function onNetworkBlocked(listener: (e: NetworkBlockedEvent) => void): () => void {
  bus.on("network-blocked", listener);
  return () => bus.off("network-blocked", listener);
}

class Bucket {
  #tokens: number;
  #last = Date.now();
  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
  ) {
    this.#tokens = burst;
  }
  take(): boolean {
    const now = Date.now();
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#last) / 1000) * this.perSecond);
    this.#last = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}

function fmt(addr: string, port: number): string {
  return isIP(addr) === 6 ? `[${addr}]:${port}` : `${addr}:${port}`;
}

export class Egress {
  #policy: NetworkPolicy;
  #closed = false;
  readonly #sockets = new Set<Socket>();
  #pending = 0;
  #dnsInFlight = 0;
  readonly #dnsBucket = new Bucket(EGRESS_LIMITS.dnsPerSecond, EGRESS_LIMITS.dnsPerSecond * 2);
  readonly #reportBucket = new Bucket(EGRESS_LIMITS.reportsPerSecond, EGRESS_LIMITS.reportsPerSecond);
  #suppressed = 0;
  /** address → names this VM was told resolve to it (insertion order = age). */
  readonly #names = new Map<string, Set<string>>();
  #nameCount = 0;
  /** Counters for tests and stats. */
  readonly counts = { dials: 0, accepted: 0, refused: 0, dnsQueries: 0, dnsDropped: 0 };

  constructor(
    private readonly port: EgressPort,
    policy: NetworkPolicy,
    private readonly vmId: number,
  ) {
    this.#policy = policy;
    port.onDial((d) => this.#dial(d.id, d.addr, d.port));
    port.onDns((q) => this.#dns(q.id, q.q));
  }

  /** Effective for new connections and queries. */
  setPolicy(p: NetworkPolicy): void {
    this.#policy = p;
  }

  get policy(): NetworkPolicy {
    return this.#policy;
  }

  /** Names the guest resolved for addr (through the stub). */
  namesOf(addr: string): string[] {
    return [...(this.#names.get(addr) ?? [])];
  }

  close(): void {
    this.#closed = true;
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
  }

  #report(destination: string, names: string[], rule: string): void {
    if (!this.#reportBucket.take()) {
      this.#suppressed++;
      return;
    }
    const e: NetworkBlockedEvent = {
      vmId: this.vmId,
      destination,
      names,
      rule,
      suppressed: this.#suppressed,
    };
    this.#suppressed = 0;
    bus.emit("network-blocked", e);
  }

  /** Refuse (and report) a dial when this VM is at its connection or pending-dial limit. */
  #refusedAtLimit(id: number, addr: string, port: number, names: string[]): boolean {
    if (this.#sockets.size < EGRESS_LIMITS.maxConnections && this.#pending < EGRESS_LIMITS.maxPendingDials)
      return false;
    this.#report(fmt(addr, port), names, "limit");
    this.#refuse(id, "ECONNREFUSED");
    return true;
  }

  #refuse(id: number, code: string): void {
    this.counts.refused++;
    this.port.refuse(id, code).catch(() => undefined);
  }

  #dial(id: number, addr: string, port: number): void {
    this.counts.dials++;
    if (this.#closed) {
      this.#refuse(id, "ENETUNREACH");
      return;
    }
    const names = this.namesOf(addr);
    const d = decide(this.#policy, addr, port, names);
    const p = this.#policy;
    const nameRules = (list: readonly { kind: string }[] | null) => !!list?.some((e) => e.kind !== "cidr");
    if (
      (!d.allowed && d.rule === "not in allow list" && nameRules(p.allow)) ||
      (d.allowed && nameRules(p.deny))
    ) {
      // the address alone does not decide: look at the name the connection announces (SNI / Host)
      if (this.#refusedAtLimit(id, addr, port, names)) return;
      // 5 s when the address alone is refused (nothing to lose); 1 s when it is admitted and only a
      // deny-by-name could still refuse it (a server-speaks-first protocol waits that long)
      this.#peekDial(id, addr, port, names, d.allowed ? 1000 : 5000);
      return;
    }
    if (!d.allowed) {
      this.#report(fmt(addr, port), names, d.rule);
      this.#refuse(id, d.rule === "none" ? "ENETUNREACH" : "ECONNREFUSED");
      return;
    }
    if (this.#refusedAtLimit(id, addr, port, names)) return;
    this.#pending++;
    // The host dials the address itself (re-checked above against the always-denied set), never a
    // name the guest chose; no source address of the guest's choosing, no options.
    const sock = connect({ host: addr, port, noDelay: true });
    this.#sockets.add(sock);
    let settled = false;
    const timer = setTimeout(
      () => sock.destroy(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" })),
      EGRESS_LIMITS.dialTimeoutMs,
    );
    const settle = () => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      this.#pending--;
      return true;
    };
    sock.once("error", (err: NodeJS.ErrnoException) => {
      if (!settle()) return;
      const code = ["ECONNREFUSED", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ECONNRESET"].includes(
        err.code ?? "",
      )
        ? err.code!
        : "ECONNREFUSED";
      this.#refuse(id, code);
    });
    sock.once("close", () => this.#sockets.delete(sock));
    sock.once("connect", () => {
      if (!settle()) return;
      if (this.#closed) {
        sock.destroy();
        return;
      }
      this.port.accept(id).then(
        (ch) => {
          this.counts.accepted++;
          bridge(sock, ch);
        },
        () => sock.destroy(),
      );
    });
  }

  /**
   * Accept the guest's connect, read what it sends first (up to PEEK_MAX bytes / 5 s), decide with
   * the name it announces, then dial: to the guest's address when the host's own DNS gave it for that
   * name, else to the address the host resolves for the name (never a guest-chosen address).
   */
  #peekDial(id: number, addr: string, port: number, names: string[], waitMs: number): void {
    this.#pending++;
    this.port.accept(id).then(
      (ch) => {
        let buf = Buffer.alloc(0);
        let done = false;
        const onData = (c: Buffer) => {
          buf = Buffer.concat([buf, c]);
          const n = announcedName(buf);
          if (n !== undefined || buf.length >= PEEK_MAX) void finish(n ?? null);
        };
        const timer = setTimeout(() => void finish(null), waitMs);
        const finish = async (name: string | null) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          ch.off("data", onData);
          ch.pause();
          this.#pending--;
          const all = name ? [...names, name] : names;
          const d = decide(this.#policy, addr, port, all);
          let target: string | undefined = addr;
          if (d.allowed && name && !names.includes(name)) {
            const got = await lookup(name, { all: true, verbatim: true }).catch(() => []);
            const addrs = got.map((r) => r.address);
            target = addrs.includes(addr) ? addr : addrs[0];
          }
          const d2 = target ? decide(this.#policy, target, port, name ? [name] : []) : d;
          if (!d.allowed || !d2.allowed || !target || this.#closed) {
            this.#report(fmt(addr, port), all, d.allowed ? d2.rule : d.rule);
            ch.destroy();
            return;
          }
          const sock = connect({ host: target, port, noDelay: true });
          this.#sockets.add(sock);
          sock.once("close", () => this.#sockets.delete(sock));
          const t = setTimeout(() => sock.destroy(), EGRESS_LIMITS.dialTimeoutMs);
          sock.once("error", () => {
            clearTimeout(t);
            ch.destroy();
          });
          sock.once("connect", () => {
            clearTimeout(t);
            this.counts.accepted++;
            sock.write(buf);
            bridge(sock, ch);
          });
        };
        ch.on("data", onData);
        ch.once("end", () => void finish(null));
        ch.once("error", () => void finish(null));
      },
      () => this.#pending--,
    );
  }

  #remember(name: string, addrs: readonly string[]): void {
    for (const a of addrs) {
      let set = this.#names.get(a);
      if (!set) {
        set = new Set();
        this.#names.set(a, set);
      }
      if (!set.has(name)) {
        set.add(name);
        this.#nameCount++;
      }
    }
    while (this.#nameCount > EGRESS_LIMITS.maxNames) {
      const [oldest, set] = this.#names.entries().next().value as [string, Set<string>];
      this.#names.delete(oldest);
      this.#nameCount -= set.size;
    }
  }

  #dns(id: number, raw: Buffer): void {
    this.counts.dnsQueries++;
    if (this.#closed) return;
    if (!this.#dnsBucket.take() || this.#dnsInFlight >= EGRESS_LIMITS.maxDnsInFlight) {
      this.counts.dnsDropped++;
      return; // the guest's resolver retries or times out
    }
    const q = parseQuery(raw);
    const answer = (b: Buffer | null) => {
      if (b && !this.#closed) this.port.dnsAnswer(id, b).catch(() => undefined);
    };
    if (!q) {
      answer(formErr(raw));
      return;
    }
    const refusal = dnsRefusal(this.#policy, q.name);
    if (refusal) {
      this.#report(`dns ${q.name}`, [q.name], refusal);
      answer(buildAnswer(q, RCODE_REFUSED));
      return;
    }
    if (q.qclass !== 1 || (q.qtype !== DNS_A && q.qtype !== DNS_AAAA)) {
      answer(buildAnswer(q, 0));
      return;
    }
    this.#dnsInFlight++;
    // The host's own resolver (getaddrinfo: /etc/hosts, then its DNS servers).
    lookup(q.name, { all: true, verbatim: true }).then(
      (list) => {
        this.#dnsInFlight--;
        const all = list.map((r) => r.address);
        this.#remember(q.name, all);
        const want = list.filter((r) => r.family === (q.qtype === DNS_A ? 4 : 6)).map((r) => r.address);
        answer(buildAnswer(q, 0, want));
      },
      (err: NodeJS.ErrnoException) => {
        this.#dnsInFlight--;
        answer(
          buildAnswer(
            q,
            err.code === "ENOTFOUND" || err.code === "ENODATA" ? RCODE_NXDOMAIN : RCODE_SERVFAIL,
          ),
        );
      },
    );
  }
}

/** Copies both ways with backpressure; either side ending ends the other's writing half. */
function bridge(sock: Socket, ch: Duplex): void {
  sock.pipe(ch);
  ch.pipe(sock);
  const kill = () => {
    sock.destroy();
    ch.destroy();
  };
  sock.on("error", kill);
  ch.on("error", kill);
  sock.on("close", () => {
    if (!ch.writableEnded) ch.end();
  });
  ch.on("close", () => {
    if (!sock.destroyed) sock.end();
  });
}
