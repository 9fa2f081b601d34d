// A tiny host-side driver for the agent protocol, used only by the boot smoke test
// (guest-agent/scripts/boot-test.mjs) before/independently of @supermachine/agent-protocol.
// It is NOT the product client: no validation beyond what the smoke test needs.
import { Decoder, Encoder } from "cbor-x";

const enc = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false, variableMapSize: true });
const dec = new Decoder({ useRecords: false, mapsAsObjects: true });
const MARKER = Buffer.from([0x61, 0x74, 0x65, 0x68, 0x65, 0x6c, 0x6c, 0x6f]);

export function frame(obj) {
  const body = enc.encode(obj);
  const out = Buffer.alloc(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, 4);
  return out;
}

export class MiniClient {
  constructor(sock, { window = 262144 } = {}) {
    this.sock = sock;
    this.window = window;
    this.buf = Buffer.alloc(0);
    this.nextId = 1;
    this.nextCh = 1;
    this.pending = new Map();
    this.channels = new Map(); // ch -> { chunks: [], onData }
    this.events = [];
    this.eventWaiters = [];
    this.hello = null;
    this.nonce = (Math.random() * 0xffffffff) >>> 0;
    sock.on("data", (d) => this.#onData(d));
  }

  // New session on the same connection (after a fatal): fresh nonce, resync scan again.
  rehello(timeoutMs = 60000) {
    this.hello = null;
    this.nonce = (Math.random() * 0xffffffff) >>> 0;
    for (const p of this.pending.values()) p.reject(new Error("session ended"));
    this.pending.clear();
    return this.handshake(timeoutMs);
  }

  async handshake(timeoutMs = 60000) {
    const h = frame({ t: "hello", v: 1, host: "boot-test", maxFrame: 5242880, window: this.window, nonce: this.nonce });
    const deadline = Date.now() + timeoutMs;
    return new Promise((resolve, reject) => {
      const tick = () => {
        if (this.hello) return resolve(this.hello);
        if (Date.now() > deadline) return reject(new Error("no hello answer"));
        this.sock.write(h);
        setTimeout(tick, 200);
      };
      this.onHello = () => resolve(this.hello);
      tick();
    });
  }

  #onData(d) {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      if (!this.hello) {
        // resync scan for the hello answer (SPEC 4.4)
        const m = this.buf.indexOf(MARKER);
        if (m === -1) {
          if (this.buf.length > 12) this.buf = this.buf.subarray(this.buf.length - 12);
          return;
        }
        if (m < 5) {
          this.buf = this.buf.subarray(m + 1);
          continue;
        }
        this.buf = this.buf.subarray(m - 5);
        const n = this.buf.readUInt32BE(0);
        if (!(n >= 1 && n <= 5242880 && this.buf[4] >= 0xa1 && this.buf[4] <= 0xb7)) {
          this.buf = this.buf.subarray(1);
          continue;
        }
      }
      if (this.buf.length < 4) return;
      const n = this.buf.readUInt32BE(0);
      if (this.buf.length < 4 + n) return;
      const body = this.buf.subarray(4, 4 + n);
      this.buf = this.buf.subarray(4 + n);
      let msg;
      try {
        msg = dec.decode(body);
      } catch (e) {
        if (!this.hello) continue;
        throw e;
      }
      this.#onFrame(msg);
    }
  }

  #onFrame(m) {
    switch (m.t) {
      case "hello":
        if (m.nonce === this.nonce && !this.hello) {
          this.hello = m;
          this.onHello?.();
        }
        break;
      case "res": {
        const p = this.pending.get(m.id);
        if (!p) break;
        this.pending.delete(m.id);
        if (m.error) {
          const e = new Error(`${m.error.code}: ${m.error.message}`);
          e.code = m.error.code;
          p.reject(e);
        } else p.resolve(m.result);
        break;
      }
      case "evt":
        this.events.push(m);
        for (const w of this.eventWaiters.splice(0)) w();
        break;
      case "data": {
        const c = this.channels.get(m.ch);
        if (!c) break;
        c.onData(Buffer.from(m.d));
        break;
      }
      case "eof": {
        const c = this.channels.get(m.ch);
        c?.onEof?.();
        break;
      }
      case "close":
        this.channels.get(m.ch)?.onClose?.();
        break;
      case "credit":
        this.channels.get(m.ch)?.onCredit?.(m.n);
        break;
      case "fatal":
        this.fatals = [...(this.fatals ?? []), m];
        // a fatal ends the session: the next hello starts a new one (SPEC 9.2)
        this.hello = null;
        break;
    }
  }

  send(obj) {
    this.sock.write(frame(obj));
  }

  req(op, args = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send({ t: "req", id, op, args });
    });
  }

  // Channel consumer that grants credit back immediately (or after `delayMs`).
  openSink(ch, { delayMs = 0, keep = true } = {}) {
    const st = { bytes: 0, chunks: [], consumed: 0, eof: false };
    st.onData = (b) => {
      st.bytes += b.length;
      if (keep) st.chunks.push(b);
      const grant = () => {
        st.consumed += b.length;
        if (st.consumed >= this.window / 2) {
          this.send({ t: "credit", ch, n: st.consumed });
          st.consumed = 0;
        }
      };
      if (delayMs) setTimeout(grant, delayMs);
      else grant();
    };
    st.onEof = () => {
      st.eof = true;
    };
    this.channels.set(ch, st);
    return st;
  }

  async exec(argv, extra = {}) {
    const chOut = this.nextCh++;
    const chErr = this.nextCh++;
    const o = this.openSink(chOut);
    const e = this.openSink(chErr);
    const r = await this.req("exec", { argv, chOut, chErr, ...extra });
    this.channels.delete(chOut);
    this.channels.delete(chErr);
    return {
      ...r,
      stdout: Buffer.concat([...o.chunks, Buffer.from(r.stdout)]).toString(),
      stderr: Buffer.concat([...e.chunks, Buffer.from(r.stderr)]).toString(),
    };
  }

  waitEvent(pred, timeoutMs = 30000) {
    const deadline = Date.now() + timeoutMs;
    return new Promise((resolve, reject) => {
      const check = () => {
        const e = this.events.find(pred);
        if (e) return resolve(e);
        if (Date.now() > deadline) return reject(new Error("event timeout"));
        this.eventWaiters.push(check);
        setTimeout(check, Math.min(500, Math.max(1, deadline - Date.now())));
      };
      check();
    });
  }
}
