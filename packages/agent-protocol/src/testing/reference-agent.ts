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
import type { Duplex } from "node:stream";
import type { CborMap } from "../cbor";
import { Channel, type ChannelIo, type InboundSink, routeFrame, writeDataFrame } from "../channel";
import {
  DEFAULT_WINDOW,
  EXEC_TAIL_MAX,
  FILE_MAX,
  FS_MAX_SHARES,
  MAX_FRAME,
  PROTOCOL_VERSION,
} from "../constants";
import { type AgentError, isAgentError, violation } from "../errors";
import { decodeFrame, encodeFrame, type Frame, type HostHelloFrame } from "../frames";
import { OPS, type ParsedRequest, parseRequestArgs, RequestError } from "../ops";
import { FrameReader, type ScanVerdict } from "../reader";
import { VERSION } from "../version";
import {
  execOp,
  killGroup,
  type ProcessHost,
  pump,
  type SpawnedProcess,
  signalNumber,
  spawnOp,
} from "./processes";

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
  private readonly host: ProcessHost;

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
        if (!this.transport.destroyed) writeDataFrame(this.transport, ch, payload);
      },
      violation: (err) => this.violation(err),
      removed: (ch) => {
        this.channels.delete(ch);
      },
    };
    this.host = {
      root: this.root,
      execTailMax: this.execTailMax,
      execs: this.execs,
      spawned: this.spawned,
      inSession: () => this.inSession,
      hostPath: (p) => this.hostPath(p),
      claimChannels: (ids) => this.claimChannels(ids),
      openChannel: (id, canSend, canRecv, extra) => this.openChannel(id, canSend, canRecv, extra),
      respond: (id, result) => this.respond(id, result),
      event: (ev, data) => this.event(ev, data),
      queued: (bytes) => {
        this.peakQueuedBytes = Math.max(this.peakQueuedBytes, bytes);
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
    const frame = routeFrame(body, "host-to-agent", this.channels, (err) => this.violation(err));
    if (frame === null) return;
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
      case "fatal":
        this.endSession();
        this.reader.scan((b) => this.scanHello(b));
        return;
      default:
        this.violation(violation("SM_UNKNOWN_FRAME", `unexpected frame ${frame.t}`));
        return;
    }
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
        return execOp(this.host, id, req.args);
      case "spawn":
        return spawnOp(this.host, id, req.args);
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
        void pump(this.host, sock, ch, null).then(() => {
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
