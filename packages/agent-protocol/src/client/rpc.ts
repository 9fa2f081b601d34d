/**
 * The request table of a session (SPEC §5): request ids, the pending map, per-call timeouts and
 * abort signals, and settling a request from its `res` frame or from the session's end.
 */
import type { CborMap } from "../cbor";
import { MAX_PENDING_REQUESTS, UINT32_MAX } from "../constants";
import { AgentError, isAgentError, violation } from "../errors";
import { encodeFrame, validateResult } from "../frames";
import { invalid } from "./args";
import type { CallOptions } from "./types";

/** What an op wrapper hooks into the life of its request. */
export interface CallHooks {
  /** The caller gave up (abort/timeout) before the answer. */
  onAbandon?: () => void;
  /** Called synchronously with a successful result, before the promise resolves. */
  onResult?: (r: CborMap) => void;
  /** Called with the result when an abandoned request still succeeds (cancel guest-side work). */
  onLateResult?: (r: CborMap) => void;
  /** Called when the request ends without a result (error res, session loss), abandoned or not. */
  onError?: (err: Error) => void;
  /** Runs right before the request is written (open the channels the op names). */
  beforeSend?: () => void;
}

/** What the table needs from its session. */
export interface RpcIo {
  /** null while requests may be sent, else the error to reject them with. */
  unavailable(): AgentError | null;
  /** The agent's maxFrame: larger requests are refused before sending. */
  peerMaxFrame(): number;
  write(bytes: Buffer): void;
}

interface Pending {
  id: number;
  op: string;
  resolve: (result: CborMap) => void;
  reject: (err: Error) => void;
  /** The caller gave up (abort/timeout); the res is still expected and is then discarded. */
  abandoned: boolean;
  onResult?: ((result: CborMap) => void) | undefined;
  onLateResult?: ((result: CborMap) => void) | undefined;
  onError?: ((err: Error) => void) | undefined;
  cleanup: () => void;
}

export class RpcTable {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  constructor(private readonly io: RpcIo) {}

  /** Requests awaiting an answer (abandoned ones included). */
  get size(): number {
    return this.pending.size;
  }

  private allocId(): number {
    for (;;) {
      const id = this.nextId;
      this.nextId = id === UINT32_MAX ? 0 : id + 1;
      if (!this.pending.has(id)) return id;
    }
  }

  /**
   * Sends a request and resolves with its `result` map. `hooks.onAbandon` runs when the caller
   * gives up (abort/timeout) before the answer; `onLateResult` when an abandoned request succeeds.
   */
  call(
    op: string,
    args: Record<string, unknown>,
    options: CallOptions | undefined,
    hooks: CallHooks = {},
  ): Promise<CborMap> {
    const signal = options?.signal;
    const timeoutMs = options?.timeoutMs;
    if (signal?.aborted) {
      return Promise.reject(
        new AgentError("SM_AGENT_ABORTED", `${op} was aborted`, { cause: signal.reason }),
      );
    }
    const down = this.io.unavailable();
    if (down !== null) return Promise.reject(down);
    if (this.pending.size >= MAX_PENDING_REQUESTS) {
      return Promise.reject(
        new AgentError(
          "SM_AGENT_BUSY",
          `${MAX_PENDING_REQUESTS} requests are already pending; wait for some to finish`,
        ),
      );
    }
    const id = this.allocId();
    return new Promise<CborMap>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const abandon = (err: AgentError) => {
        const p = this.pending.get(id);
        if (p === undefined || p.abandoned) return;
        p.abandoned = true;
        p.cleanup();
        hooks.onAbandon?.();
        reject(err);
      };
      const onAbort = () =>
        abandon(
          isAgentError(signal?.reason)
            ? signal.reason
            : new AgentError("SM_AGENT_ABORTED", `${op} was aborted`, { cause: signal?.reason }),
        );
      const p: Pending = {
        id,
        op,
        resolve,
        reject,
        abandoned: false,
        onResult: hooks.onResult,
        onLateResult: hooks.onLateResult,
        onError: hooks.onError,
        cleanup: () => {
          if (timer !== undefined) clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
        },
      };
      this.pending.set(id, p);
      if (timeoutMs !== undefined && timeoutMs > 0) {
        timer = setTimeout(
          () => abandon(new AgentError("SM_AGENT_TIMEOUT", `${op} got no answer within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        const bytes = encodeFrame({ t: "req", id, op, args: args as CborMap });
        const peerMaxFrame = this.io.peerMaxFrame();
        if (bytes.length - 4 > peerMaxFrame) {
          throw invalid(
            `${op} request is ${bytes.length - 4} bytes, above the agent's maxFrame ${peerMaxFrame}; send less data per call`,
          );
        }
        hooks.beforeSend?.();
        this.io.write(bytes);
      } catch (e) {
        this.pending.delete(id);
        p.cleanup();
        p.onError?.(e as Error);
        reject(isAgentError(e) ? e : invalid(`cannot encode ${op} arguments: ${(e as Error).message}`));
      }
    });
  }

  /**
   * Settles request `id` with the agent's `res`. Returns the violation the session must fail with
   * (a res for an id that is not pending, or a result that breaks the op's schema), else null.
   */
  answer(
    id: number,
    result: CborMap | undefined,
    error: { code: string; message: string } | undefined,
  ): AgentError | null {
    const p = this.pending.get(id);
    if (p === undefined) return violation("SM_UNKNOWN_ID", `res for id ${id}, which is not pending`);
    if (result !== undefined) {
      try {
        validateResult(p.op, result);
      } catch (e) {
        return e as AgentError;
      }
    }
    this.pending.delete(id);
    p.cleanup();
    if (result !== undefined) {
      if (p.abandoned) p.onLateResult?.(result);
      else {
        p.onResult?.(result);
        p.resolve(result);
      }
      return null;
    }
    const e = error!;
    const code = e.code === "SM_FILE_TOO_LARGE" ? "SM_FILE_TOO_LARGE" : "SM_AGENT_REMOTE";
    const err = new AgentError(code, `agent ${p.op} failed: ${e.code}: ${e.message}`, {
      details: { remoteCode: e.code },
    });
    p.onError?.(err);
    if (!p.abandoned) p.reject(err);
    return null;
  }

  /** Ends every pending request with `err` (the session is gone). */
  failAll(err: AgentError): void {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      p.cleanup();
      p.onError?.(err);
      if (!p.abandoned) p.reject(err);
    }
  }
}
