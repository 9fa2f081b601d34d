// @supermachine/agent-protocol/testing — TEST DOUBLES only. The real agent is guest-agent/ (C).
export {
  ReferenceAgent,
  type ReferenceAgentOptions,
  type ReferenceShare,
  startReferenceAgent,
} from "./reference-agent";
