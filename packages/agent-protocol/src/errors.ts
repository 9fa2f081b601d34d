/**
 * Errors of @supermachine/agent-protocol. Match on `code`, not on `instanceof` (several copies of
 * the package may be installed). Every code is documented in README.md.
 */
import { codeGuard, SupermachineErrorBase, type SupermachineErrorBaseOptions } from "@supermachine/base";

/** Every code this package defines (each supermachine code is defined in exactly one package). */
export const AGENT_ERROR_CODES = [
  /** The peer broke the protocol (or sent `fatal`); the session is torn down. `reason` has the SPEC §9.1 code. */
  "SM_AGENT_PROTOCOL",
  /** The transport closed or failed, the handshake timed out, or the client was closed. */
  "SM_AGENT_LOST",
  /** A per-call `timeoutMs` elapsed before the agent answered. */
  "SM_AGENT_TIMEOUT",
  /** The call's AbortSignal fired. */
  "SM_AGENT_ABORTED",
  /** The agent answered the request with an error; `remoteCode` is its code (ENOENT, EACCES, ...). */
  "SM_AGENT_REMOTE",
  /** A file for write-file/read-file exceeds 4 MiB (checked locally before sending, or by the agent). */
  "SM_FILE_TOO_LARGE",
  /** Invalid arguments or options passed to this library. */
  "SM_AGENT_INVALID_ARGS",
  /** More than MAX_PENDING_REQUESTS requests are outstanding. */
  "SM_AGENT_BUSY",
  /** An exec produced more output than its maxOutputBytes; the process group was killed. */
  "SM_AGENT_OUTPUT_LIMIT",
] as const;

/** Stable error codes thrown by this package. */
export type AgentErrorCode = (typeof AGENT_ERROR_CODES)[number];

/** The `fatal` codes of SPEC §9.1. */
export type FatalCode =
  | "SM_FRAME_EMPTY"
  | "SM_FRAME_TOO_LARGE"
  | "SM_BAD_CBOR"
  | "SM_BAD_FRAME"
  | "SM_UNKNOWN_FRAME"
  | "SM_UNKNOWN_ID"
  | "SM_DUPLICATE_ID"
  | "SM_UNKNOWN_CHANNEL"
  | "SM_DATA_AFTER_EOF"
  | "SM_CREDIT_EXCEEDED"
  | "SM_CREDIT_OVERFLOW"
  | "SM_VERSION";

/** `{ cause, details }`, as in every supermachine package. */
export type AgentErrorOptions = SupermachineErrorBaseOptions;

/**
 * The one error class of this package; the shape (`code`, `message`, `cause`, `details`; options
 * `{ cause, details }`) comes from @supermachine/base. `details` may hold `reason` (SM_AGENT_PROTOCOL: the
 * SPEC §9.1 fatal code), `remote` (SM_AGENT_PROTOCOL: true when the peer sent `fatal`, false when we
 * detected the violation) and `remoteCode` (SM_AGENT_REMOTE / SM_FILE_TOO_LARGE from the agent: the agent's
 * `error.code`).
 */
export class AgentError extends SupermachineErrorBase<AgentErrorCode> {
  override readonly name = "AgentError";

  /** `details.reason`: for SM_AGENT_PROTOCOL, the SPEC §9.1 fatal code. */
  get reason(): FatalCode | undefined {
    return this.details.reason as FatalCode | undefined;
  }
  /** `details.remote`: for SM_AGENT_PROTOCOL, true when the peer sent `fatal`. */
  get remote(): boolean | undefined {
    return this.details.remote as boolean | undefined;
  }
  /** `details.remoteCode`: for SM_AGENT_REMOTE / SM_FILE_TOO_LARGE from the agent, the agent's `error.code`. */
  get remoteCode(): string | undefined {
    return this.details.remoteCode as string | undefined;
  }
}

/** A protocol violation detected locally (SPEC §9). */
export function violation(reason: FatalCode, message: string): AgentError {
  return new AgentError("SM_AGENT_PROTOCOL", `agent protocol violation (${reason}): ${message}`, {
    details: { reason, remote: false },
  });
}

const agentGuard = codeGuard(AGENT_ERROR_CODES, "AgentError");

/** True for an AgentError (from any copy of this package), optionally with the given code. */
export function isAgentError(e: unknown, code?: AgentErrorCode): e is AgentError {
  return agentGuard(e, code);
}
