// The host client: AgentClient (agent-client.ts: public class and op wrappers) over a session state
// machine (session.ts), a request table (rpc.ts) and spawned processes (child.ts).
export { AgentClient, connectAgent } from "./agent-client";
export { AgentChild } from "./child";
export type {
  AgentClientEvents,
  AgentClientOptions,
  AgentClientState,
  AgentHello,
  AgentStats,
  CallOptions,
  CommandSpec,
  ExecResult,
  ExecSpec,
  ExitEvent,
  ExitInfo,
  FsAttachSpec,
  ProcessSpec,
  ResumeSpec,
  StageFileSpec,
  WriteFileOptions,
} from "./types";
