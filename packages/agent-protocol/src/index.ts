export {
  type BootConfig,
  type BootNetwork,
  type BootVolume,
  type BootWorkload,
  decodeBootConfig,
  encodeBootConfig,
  type ResolvedBootConfig,
} from "./boot-config";
export type { CborMap, CborValue } from "./cbor";
export {
  AgentChild,
  AgentClient,
  type AgentClientEvents,
  type AgentClientOptions,
  type AgentClientState,
  type AgentHello,
  type AgentStats,
  type CallOptions,
  type CommandSpec,
  connectAgent,
  type ExecResult,
  type ExecSpec,
  type ExitEvent,
  type ExitInfo,
  type FsAttachSpec,
  type ProcessSpec,
  type ResumeSpec,
  type StageFileSpec,
  type WriteFileOptions,
} from "./client";
export {
  DEFAULT_WINDOW,
  FILE_MAX,
  FS_MAX_OUTSTANDING,
  FS_MAX_SHARES,
  FS_MAX_WRITE,
  FS_REPLY_MAX,
  FS_REQ_BUF,
  FS_TAG_MAX,
  HELLO_RESEND_MS,
  HELLO_TIMEOUT_MS,
  MAX_FRAME,
  MIN_MAX_FRAME,
  PROTOCOL_VERSION,
} from "./constants";
export {
  AGENT_ERROR_CODES,
  AgentError,
  type AgentErrorCode,
  type AgentErrorOptions,
  type FatalCode,
  isAgentError,
} from "./errors";
export { type Direction, decodeFrame, encodeFrame, type Frame } from "./frames";
export { VERSION } from "./version";
