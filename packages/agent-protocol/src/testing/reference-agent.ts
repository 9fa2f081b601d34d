/**
 * TEST DOUBLE — a reference agent written in TypeScript, for unit-testing AgentClient without a VM.
 *
 * The real agent is the static C program in guest-agent/. This one implements the same protocol
 * (SPEC.md) on the host: "guest" paths are mapped into a temporary root directory, commands run as
 * host processes (through the host PATH) with that directory as "/", tcp-connect dials the host's
 * 127.0.0.1. It has no pty support (no "tty" cap), reports peakRssKib 0, and never touches the
 * clock or the RNG on resume (it records the values instead). fs-attach mounts nothing: a share's
 * channel is a loopback (every byte the host writes comes back), enough to test the client side.
 */
import { type ChildProcess, spawn as spawnProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { chmod, mkdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { connect as netConnect } from "node:net";
import { freemem, loadavg, tmpdir, totalmem, uptime } from "node:os";
import { dirname, join, relative, resolve as resolvePath, sep } from "node:path";
import type { Duplex, Readable } from "node:stream";
import type { CborMap } from "../cbor";
import { encodeDataHeader } from "../cbor";
import { Channel, type ChannelIo, type InboundSink } from "../channel";
import {
  DEFAULT_WINDOW,
  EXEC_TAIL_MAX,
  FILE_MAX,
  FS_MAX_SHARES,
  MAX_FRAME,
  PROTOCOL_VERSION,
} from "../constants";
import { type AgentError, isAgentError, violation } from "../errors";
import { type ChannelFrame, decodeFrame, encodeFrame, type Frame, type HostHelloFrame } from "../frames";
import {
  type ExecArgs,
  OPS,
  type ParsedRequest,
  parseRequestArgs,
  RequestError,
  type SpawnArgs,
} from "../ops";
import { FrameReader, type ScanVerdict } from "../reader";
import { VERSION } from "../version";

export interface ReferenceAgentOptions {
  /** Host directory that plays the guest's "/" (default: a fresh temp dir, removed by close()). */
  root?: string;
  /** Window we announce, bytes (default 256 KiB). */
  window?: number;
  /** maxFrame we announce, bytes (default 5 MiB). */
  maxFrame?: number;
  /** Version text in hello (default: this package's version). */
  agentVersion?: string;
  /** Whether hello says ready (default true). With false, call `markReady()` later. */
  ready?: boolean;
  bootMs?: number;
  /** Per-stream exec buffer, bytes (default 64 KiB, SPEC §6.1). */
  execTailMax?: number;
  /** A workload process started at once (for workload-signal / workload-exit). */
  workload?: { argv: string[] } | null;
}

/** Capabilities advertised in hello: every v1 op plus `chain` and `fs` (SPEC §4.2). */
const ALL_OPS = [...OPS, "chain", "fs"];

/** A share attached with fs-attach (loopback: no FUSE, SPEC §6.4 bookkeeping only). */
export interface ReferenceShare {
  ch: number;
  path: string | null;
  /** The channel went away without fs-detach (a real agent then answers EIO in the guest). */
  orphaned: boolean;
}

interface SpawnedProcess {
  child: ChildProcess;
  chIn: number;
  stdinClosed: boolean;
}

/** TEST DOUBLE: an in-process agent implementing SPEC.md over any Duplex. */
export class ReferenceAgent {
  readonly root: string;
  /** Number of sessions started (hellos answered). */
  sessions = 0;
  /** Last `resume` arguments received. */
  lastResume: { timeNs: bigint | number; entropy: Buffer } | null = null;
  /** fatal codes this agent sent. */
  readonly fatalsSent: string[] = [];
  /** Largest number of bytes queued for sending on any channel (waiting for host credit). */
  peakQueuedBytes = 0;
  /** Attached shares by tag. */
  readonly shares = new Map<string, ReferenceShare>();
  private readonly ownsRoot: boolean;
  private readonly window: number;
  private readonly maxFrame: number;
  private readonly agentVersion: string;
  private readonly execTailMax: number;
  private readonly bootMs: number;
  private _ready: boolean;
  private readonly reader: FrameReader;
  private readonly transport: Duplex;
  private hostWindow = DEFAULT_WINDOW;
  private hostMaxFrame = MAX_FRAME;
  private inSession = false;
  private readonly channels = new Map<number, Channel>();
  private maxChannelId = 0;
  private readonly pendingIds = new Set<number>();
  private readonly execs = new Set<ChildProcess>();
  private readonly spawned = new Map<number, SpawnedProcess>();
  private workload: ChildProcess | null = null;
  private closed = false;
  private readonly io: ChannelIo;

  constructor(transport: Duplex, options: ReferenceAgentOptions = {}) {
    this.transport = transport;
    this.ownsRoot = options.root === undefined;
    this.root = options.root ?? mkdtempSync(join(tmpdir(), "sm-reference-agent-"));
    mkdirSync(this.root, { recursive: true });
    this.window = options.window ?? DEFAULT_WINDOW;
    this.maxFrame = options.maxFrame ?? MAX_FRAME;
    this.agentVersion = options.agentVersion ?? `reference-${VERSION}`;
    this.execTailMax = options.execTailMax ?? EXEC_TAIL_MAX;
    this._ready = options.ready ?? true;
    this.bootMs = options.bootMs ?? 1;
    this.reader = new FrameReader({
      maxFrame: this.maxFrame,
      onFrame: (body) => this.onFrame(body),
      onError: (err) => this.violation(err),
    });
    this.reader.scan((body) => this.scanHello(body));
    this.io = {
      sendFrame: (f) => this.send(f),
      sendData: (ch, payload) => {
        if (this.transport.destroyed) return;
        this.transport.cork();
        this.transport.write(encodeDataHeader(ch, payload.length));
        this.transport.write(payload);
        this.transport.uncork();
      },
      violation: (err) => this.violation(err),
      removed: (ch) => {
        this.channels.delete(ch);
      },
    };
    transport.on("data", (chunk: Buffer) => {
      try {
        this.reader.push(chunk);
      } catch (e) {
        this.violation(isAgentError(e) ? e : violation("SM_BAD_FRAME", String(e)));
      }
    });
    // the transport going away ends this agent (its temp root is removed)
    transport.on("error", () => this.close());
    transport.on("close", () => this.close());
    if (options.workload) {
      const w = spawnProcess(options.workload.argv[0]!, options.workload.argv.slice(1), {
        cwd: this.root,
        stdio: "ignore",
      });
      w.on("error", () => {});
      w.on("exit", (code, sig) => {
        this.workload = null;
        if (this.inSession) {
          this.event("workload-exit", {
            exitCode: code ?? -1,
            signal: sig === null ? null : signalNumber(sig),
          });
        }
      });
      this.workload = w;
    }
  }

  /** Sends the `ready` event (if the session's hello said not ready). */
  markReady(bootMs = this.bootMs): void {
    if (this._ready) return;
    this._ready = true;
    if (this.inSession) this.event("ready", { bootMs });
  }

  /** Sends an event frame (tests). */
  event(ev: string, data: Record<string, unknown>): void {
    this.send({ t: "evt", ev, data: data as CborMap });
  }

  /** Writes raw bytes to the transport (tests that inject invalid frames). */
  sendRaw(bytes: Buffer): void {
    if (!this.transport.destroyed) this.transport.write(bytes);
  }

  /** Stops everything: kills processes, removes the temp root, destroys the transport. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.endSession();
    this.workload?.kill("SIGKILL");
    for (const p of this.spawned.values()) killGroup(p.child);
    this.spawned.clear();
    this.reader.stop();
    this.transport.destroy();
    if (this.ownsRoot) rmSync(this.root, { recursive: true, force: true });
  }

  // ---- session (SPEC §4) ----

  private scanHello(body: Buffer): ScanVerdict {
    let frame: Frame;
    try {
      frame = decodeFrame(body, "host-to-agent");
    } catch {
      return "skip-byte";
    }
    if (frame.t !== "hello" || !("host" in frame)) return "skip-frame";
    this.startSession(frame);
    return "accept";
  }

  private startSession(h: HostHelloFrame): void {
    this.endSession();
    this.inSession = true;
    this.sessions++;
    this.hostWindow = h.window;
    this.hostMaxFrame = h.maxFrame;
    const v = Math.min(h.v, PROTOCOL_VERSION);
    this.send({
      t: "hello",
      v,
      agent: this.agentVersion,
      caps: ALL_OPS,
      maxFrame: this.maxFrame,
      window: this.window,
      ready: this._ready,
      listening: null,
      bootMs: this.bootMs,
      nonce: h.nonce,
    });
  }

  /** Drops the session state (SPEC §4.2 step 1); spawned processes keep running. */
  private endSession(): void {
    this.inSession = false;
    for (const s of this.shares.values()) s.orphaned = true;
    const chans = [...this.channels.values()];
    this.channels.clear();
    for (const c of chans) c.remove(new Error("session ended"));
    for (const c of this.execs) killGroup(c);
    this.execs.clear();
    this.pendingIds.clear();
    this.maxChannelId = 0;
  }

  private violation(err: AgentError): void {
    if (!this.inSession) return;
    const code = err.reason ?? "SM_BAD_FRAME";
    this.fatalsSent.push(code);
    this.send({ t: "fatal", code, message: err.message.slice(0, 4000) });
    this.endSession();
    this.reader.scan((body) => this.scanHello(body));
  }

  private send(frame: Frame): void {
    if (this.transport.destroyed || this.transport.writableEnded) return;
    this.transport.write(encodeFrame(frame));
  }

  private onFrame(body: Buffer): void {
    let frame: Frame;
    try {
      frame = decodeFrame(body, "host-to-agent");
    } catch (e) {
      this.violation(e as AgentError);
      return;
    }
    switch (frame.t) {
      case "hello":
        this.startSession(frame as HostHelloFrame);
        return;
      case "req":
        if (this.pendingIds.has(frame.id)) {
          this.violation(violation("SM_DUPLICATE_ID", `req id ${frame.id} is already pending`));
          return;
        }
        this.pendingIds.add(frame.id);
        this.handleRequest(frame.id, frame.op, frame.args);
        return;
      case "data":
      case "credit":
      case "eof":
      case "close":
        this.onChannelFrame(frame);
        return;
      case "fatal":
        this.endSession();
        this.reader.scan((b) => this.scanHello(b));
        return;
      default:
        this.violation(violation("SM_UNKNOWN_FRAME", `unexpected frame ${frame.t}`));
        return;
    }
  }

  private onChannelFrame(frame: ChannelFrame): void {
    const ch = this.channels.get(frame.ch);
    if (ch === undefined) {
      if (frame.t === "data" || frame.t === "eof") {
        this.violation(violation("SM_UNKNOWN_CHANNEL", `${frame.t} for unknown channel ${frame.ch}`));
      }
      return;
    }
    ch.handle(frame);
  }

  private respond(id: number, result: Record<string, unknown>): void {
    if (!this.pendingIds.delete(id)) return; // session was reset meanwhile
    this.send({ t: "res", id, result: result as CborMap });
  }

  private respondError(id: number, code: string, message: string): void {
    if (!this.pendingIds.delete(id)) return;
    this.send({ t: "res", id, error: { code, message: message.slice(0, 4000) } });
  }

  private handleRequest(id: number, op: string, args: CborMap): void {
    let req: ParsedRequest;
    try {
      req = parseRequestArgs(op, args);
    } catch (e) {
      const err = e as RequestError;
      this.respondError(id, err.code ?? "EINVAL", err.message);
      return;
    }
    this.run(id, req).catch((e: unknown) => {
      if (e instanceof RequestError) return this.respondError(id, e.code, e.message);
      const code = (e as NodeJS.ErrnoException).code;
      this.respondError(id, typeof code === "string" && /^E[A-Z0-9]+$/.test(code) ? code : "EIO", String(e));
    });
  }

  /** Guest path → host path inside root; never escapes the root. */
  private hostPath(guestPath: string): string {
    const p = resolvePath(this.root, `.${guestPath}`);
    const rel = relative(this.root, p);
    if (rel.startsWith("..") || rel.startsWith(sep))
      throw new RequestError("EACCES", `${guestPath} escapes the root`);
    return p;
  }

  private claimChannels(ids: number[]): void {
    const seen = new Set<number>();
    for (const id of ids) {
      if (id <= this.maxChannelId || seen.has(id)) {
        throw new RequestError("EINVAL", `channel id ${id} is not new and increasing (SPEC §8.1)`);
      }
      seen.add(id);
    }
    this.maxChannelId = Math.max(this.maxChannelId, ...ids);
  }

  private openChannel(
    id: number,
    canSend: boolean,
    canRecv: boolean,
    extra: Partial<{ sink: InboundSink; onAbort: (e: Error) => void }> = {},
  ): Channel {
    const ch = new Channel(this.io, {
      id,
      canSend,
      canRecv,
      recvWindow: this.window,
      sendWindow: this.hostWindow,
      peerMaxFrame: this.hostMaxFrame,
      sink: extra.sink,
      onAbort: extra.onAbort,
    });
    this.channels.set(id, ch);
    return ch;
  }

  private async run(id: number, req: ParsedRequest): Promise<void> {
    switch (req.op) {
      case "ping":
        return this.respond(id, {});
      case "exec":
        return this.exec(id, req.args);
      case "spawn":
        return this.spawn(id, req.args);
      case "signal": {
        const p = this.spawned.get(req.args.pid);
        if (p === undefined) throw new RequestError("ESRCH", `no process ${req.args.pid}`);
        p.child.kill(req.args.signum);
        return this.respond(id, {});
      }
      case "resize":
        if (!this.spawned.has(req.args.pid)) throw new RequestError("ESRCH", `no process ${req.args.pid}`);
        throw new RequestError("EINVAL", "the process has no tty (the reference agent has no pty support)");
      case "close-stdin": {
        const p = this.spawned.get(req.args.pid);
        if (p === undefined) throw new RequestError("ESRCH", `no process ${req.args.pid}`);
        p.stdinClosed = true;
        p.child.stdin?.end();
        this.channels.get(p.chIn)?.abort();
        return this.respond(id, {});
      }
      case "write-file": {
        const target = this.hostPath(req.args.path);
        if (req.args.mkdirs) await mkdir(dirname(target), { recursive: true });
        const tmp = `${target}.sm-tmp-${randomUUID()}`;
        await writeFile(tmp, req.args.data, { mode: req.args.mode });
        await chmod(tmp, req.args.mode);
        await rename(tmp, target);
        return this.respond(id, {});
      }
      case "read-file": {
        const p = this.hostPath(req.args.path);
        const st = await stat(p);
        if (!st.isFile()) throw new RequestError("EINVAL", `${req.args.path} is not a regular file`);
        if (st.size > FILE_MAX || st.size > this.hostMaxFrame - 1024) {
          throw new RequestError(
            "SM_FILE_TOO_LARGE",
            `${req.args.path} is ${st.size} bytes, above ${FILE_MAX}`,
          );
        }
        const data = await readFile(p);
        return this.respond(id, { data, mode: st.mode & 0o7777 });
      }
      case "workload-signal":
        if (this.workload === null) throw new RequestError("ESRCH", "no workload is running");
        this.workload.kill(req.args.signum);
        return this.respond(id, {});
      case "tcp-connect":
        return this.tcpConnect(id, req.args.port, req.args.ch);
      case "fs-attach":
        return this.fsAttach(id, req.args.tag, req.args.ch, req.args.path);
      case "fs-detach": {
        const share = this.shares.get(req.args.tag);
        if (share === undefined) throw new RequestError("ENOENT", `share '${req.args.tag}' is not attached`);
        this.shares.delete(req.args.tag);
        this.channels.get(share.ch)?.abort();
        return this.respond(id, {});
      }
      case "resume":
        this.lastResume = { timeNs: req.args.timeNs, entropy: Buffer.from(req.args.entropy) };
        return this.respond(id, {});
      case "stats":
        return this.respond(id, {
          memTotalKib: Math.floor(totalmem() / 1024),
          memAvailKib: Math.floor(freemem() / 1024),
          uptimeMs: Math.floor(uptime() * 1000),
          loadAvg1Milli: Math.round((loadavg()[0] ?? 0) * 1000),
        });
      case "shutdown":
        this.respond(id, {});
        this.transport.end();
        return;
    }
  }

  private startProcess(
    args: ExecArgs | SpawnArgs,
    argv: string[],
    env: Record<string, string>,
    cwd: string,
    stdin: boolean,
  ) {
    if (args.tty) throw new RequestError("EINVAL", "tty is not supported by the reference agent");
    const child = spawnProcess(argv[0]!, argv.slice(1), {
      cwd: this.hostPath(cwd),
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: this.root, ...env },
      stdio: [stdin ? "pipe" : "ignore", "pipe", "pipe"],
      detached: true, // own process group, so the timeout can kill the group (SPEC §6.1)
    });
    return child;
  }

  private async stage(args: ExecArgs | SpawnArgs): Promise<void> {
    for (const f of args.stage) {
      const p = this.hostPath(f.path);
      await mkdir(dirname(p), { recursive: true });
      await writeFile(p, f.data);
      await chmod(p, f.mode);
    }
    await stat(this.hostPath(args.cwd)).catch(() => {
      throw new RequestError("ENOENT", `cwd ${args.cwd} does not exist`);
    });
  }

  /**
   * Pumps a pipe into a channel within credit: the pipe is paused while a write waits for credit.
   * `tail` mode (exec) keeps up to execTailMax bytes and only streams when the buffer is full.
   */
  private pump(
    src: Readable,
    ch: Channel | null,
    tail: { bufs: Buffer[]; len: number } | null,
  ): Promise<void> {
    return new Promise((resolve) => {
      let writing: Promise<void> = Promise.resolve();
      const sendNow = (b: Buffer) => {
        if (ch === null || ch.state !== "open") return;
        const w = ch.write(b);
        w.catch(() => {});
        if (ch.pendingWriteBytes === 0) return; // sent within credit: keep reading
        this.peakQueuedBytes = Math.max(this.peakQueuedBytes, ch.pendingWriteBytes);
        src.pause();
        writing = w.then(
          () => {
            src.resume();
          },
          () => {
            src.resume();
          },
        );
      };
      src.on("data", (b: Buffer) => {
        if (tail === null) return sendNow(b);
        tail.bufs.push(b);
        tail.len += b.length;
        if (tail.len >= this.execTailMax) {
          const all = Buffer.concat(tail.bufs);
          tail.bufs = [];
          tail.len = 0;
          sendNow(all);
        }
      });
      src.on("error", () => {});
      src.on("close", () => {
        writing.then(resolve, resolve);
      });
    });
  }

  private async exec(id: number, a: ExecArgs): Promise<void> {
    this.claimChannels(a.chErr === null ? [a.chOut] : [a.chOut, a.chErr]);
    let killed = false;
    let current: ChildProcess | null = null;
    const kill = () => {
      killed = true;
      if (current !== null) killGroup(current);
    };
    const out = this.openChannel(a.chOut, true, false, { onAbort: kill });
    const err = a.chErr === null ? null : this.openChannel(a.chErr, true, false, { onAbort: kill });
    const tails = { out: { bufs: [] as Buffer[], len: 0 }, err: { bufs: [] as Buffer[], len: 0 } };
    let timedOut = false;
    const timer =
      a.timeoutMs > 0
        ? setTimeout(() => {
            timedOut = true;
            kill();
          }, a.timeoutMs)
        : undefined;
    try {
      await this.stage(a);
      let result = await this.runOne(a, a.argv, a.env, a.cwd, out, err, tails, (c) => {
        current = c;
        if (killed) killGroup(c);
      });
      if (result.exitCode === 0 && a.chain !== null && !killed) {
        const c = a.chain;
        result = await this.runOne(a, c.argv, { ...a.env, ...c.env }, c.cwd, out, err, tails, (ch) => {
          current = ch;
          if (killed) killGroup(ch);
        });
      }
      if (timedOut) result = { exitCode: -1, signal: 9 };
      if (out.state === "open") out.remove();
      if (err !== null && err.state === "open") err.remove();
      this.respond(id, {
        exitCode: result.exitCode,
        signal: result.signal,
        timedOut,
        peakRssKib: 0,
        stdout: Buffer.concat(tails.out.bufs),
        stderr: Buffer.concat(tails.err.bufs),
      });
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      if (out.state !== "removed") out.remove();
      if (err !== null && err.state !== "removed") err.remove();
    }
  }

  private runOne(
    a: ExecArgs,
    argv: string[],
    env: Record<string, string>,
    cwd: string,
    out: Channel,
    err: Channel | null,
    tails: { out: { bufs: Buffer[]; len: number }; err: { bufs: Buffer[]; len: number } },
    started: (c: ChildProcess) => void,
  ): Promise<{ exitCode: number; signal: number | null }> {
    return new Promise((resolve, reject) => {
      let child: ChildProcess;
      try {
        child = this.startProcess(a, argv, env, cwd, false);
      } catch (e) {
        return reject(e);
      }
      this.execs.add(child);
      started(child);
      let spawnError: NodeJS.ErrnoException | null = null;
      child.on("error", (e: NodeJS.ErrnoException) => {
        spawnError = e;
      });
      const pumps = Promise.all([
        this.pump(child.stdout!, out, tails.out),
        this.pump(child.stderr!, err, tails.err),
      ]);
      child.on("close", (code, sig) => {
        this.execs.delete(child);
        void pumps.then(() => {
          if (spawnError !== null) {
            const notFound = spawnError.code === "ENOENT";
            const msg = `sm-agent: ${argv[0]}: ${notFound ? "command not found" : spawnError.message}\n`;
            tails.err.bufs.push(Buffer.from(msg));
            return resolve({ exitCode: notFound ? 127 : 126, signal: null });
          }
          resolve(
            sig !== null
              ? { exitCode: -1, signal: signalNumber(sig) }
              : { exitCode: code ?? -1, signal: null },
          );
        });
      });
    });
  }

  private async spawn(id: number, a: SpawnArgs): Promise<void> {
    const ids = a.chErr === null ? [a.chOut, a.chIn] : [a.chOut, a.chErr, a.chIn];
    this.claimChannels(ids);
    await this.stage(a);
    const child = this.startProcess(a, a.argv, a.env, a.cwd, true);
    let spawnError: NodeJS.ErrnoException | null = null;
    child.on("error", (e: NodeJS.ErrnoException) => {
      spawnError = e;
    });
    await new Promise<void>((r) => {
      child.once("spawn", () => r());
      child.once("error", () => r());
    });
    const pid = child.pid ?? 0x7fff_0000 + (id & 0xffff);
    const out = this.openChannel(a.chOut, true, false, { onAbort: () => child.stdout?.destroy() });
    const err =
      a.chErr === null
        ? null
        : this.openChannel(a.chErr, true, false, { onAbort: () => child.stderr?.destroy() });
    const proc: SpawnedProcess = { child, chIn: a.chIn, stdinClosed: false };
    const stdin = child.stdin!;
    stdin.on("error", () => {});
    const inCh = this.openChannel(a.chIn, false, true, {
      sink: {
        data: (b) => {
          if (proc.stdinClosed) return inCh.consumed(b.length);
          stdin.write(b, () => inCh.consumed(b.length));
        },
        eof: () => {
          proc.stdinClosed = true;
          stdin.end();
        },
        error: () => {
          proc.stdinClosed = true;
          stdin.destroy();
        },
      },
    });
    this.spawned.set(pid, proc);
    this.respond(id, { pid });
    const pumps = Promise.all([this.pump(child.stdout!, out, null), this.pump(child.stderr!, err, null)]);
    child.on("close", (code, sig) => {
      void pumps.then(async () => {
        if (spawnError !== null) {
          const notFound = (spawnError as NodeJS.ErrnoException).code === "ENOENT";
          const msg = `sm-agent: ${a.argv[0]}: ${notFound ? "command not found" : (spawnError as Error).message}\n`;
          if (err !== null && err.state === "open") await err.write(Buffer.from(msg)).catch(() => {});
        }
        await Promise.all([out.end().catch(() => {}), err?.end().catch(() => {})]);
        if (inCh.state === "open") inCh.abort();
        this.spawned.delete(pid);
        if (!this.inSession) return;
        const failed = spawnError !== null;
        this.event("exit", {
          pid,
          exitCode: failed
            ? (spawnError as NodeJS.ErrnoException).code === "ENOENT"
              ? 127
              : 126
            : sig !== null
              ? -1
              : (code ?? -1),
          signal: failed || sig === null ? null : signalNumber(sig),
          timedOut: false,
          peakRssKib: 0,
        });
      });
    });
  }

  private fsAttach(id: number, tag: string, chId: number, path: string | null): void {
    this.claimChannels([chId]);
    if (this.shares.has(tag)) throw new RequestError("EEXIST", `share '${tag}' is already attached`);
    if (this.shares.size >= FS_MAX_SHARES) throw new RequestError("EBUSY", "too many shares attached");
    const share: ReferenceShare = { ch: chId, path, orphaned: false };
    this.shares.set(tag, share);
    const ch = this.openChannel(chId, true, true, {
      sink: {
        data: (b) => {
          const w = ch.write(Buffer.from(b));
          w.then(
            () => ch.consumed(b.length),
            () => {},
          );
        },
        eof: () => {
          share.orphaned = true;
          ch.abort();
        },
        error: () => {},
      },
      onAbort: () => {
        share.orphaned = true;
      },
    });
    this.respond(id, {});
  }

  private tcpConnect(id: number, port: number, chId: number): Promise<void> {
    this.claimChannels([chId]);
    return new Promise((resolve, reject) => {
      const sock = netConnect({ host: "127.0.0.1", port });
      sock.once("error", (e: NodeJS.ErrnoException) => {
        reject(new RequestError(e.code === "ECONNREFUSED" ? "ECONNREFUSED" : "EIO", e.message));
      });
      sock.once("connect", () => {
        sock.removeAllListeners("error");
        sock.on("error", () => {
          if (ch.state === "open") ch.abort();
        });
        const ch = this.openChannel(chId, true, true, {
          sink: {
            data: (b) => sock.write(b, () => ch.consumed(b.length)),
            eof: () => sock.end(),
            error: () => sock.destroy(),
          },
          onAbort: () => sock.destroy(),
        });
        this.respond(id, {});
        void this.pump(sock, ch, null).then(() => {
          if (ch.state === "open" && ch.sendOpen) ch.end().catch(() => {});
        });
        resolve();
      });
    });
  }
}

/** Creates a reference agent (TEST DOUBLE) serving `transport`. */
export function startReferenceAgent(transport: Duplex, options?: ReferenceAgentOptions): ReferenceAgent {
  return new ReferenceAgent(transport, options);
}

function killGroup(c: ChildProcess): void {
  if (c.pid === undefined || c.exitCode !== null || c.signalCode !== null) return;
  try {
    process.kill(-c.pid, "SIGKILL");
  } catch {
    c.kill("SIGKILL");
  }
}

const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
};
function signalNumber(sig: NodeJS.Signals): number {
  return SIGNALS[sig] ?? 15;
}
