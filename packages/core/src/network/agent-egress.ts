/** The EgressPort of an AgentClient session (SPEC 6.5), used by runtime.ts's adapter. */
import type { AgentClient } from "@supermachine/agent-protocol";
import type { EgressPort } from "./egress";

/** undefined when the agent did not announce the `egress` cap (older agent, or a "nat" VM). */
export function egressPortOf(c: AgentClient): EgressPort | undefined {
  if (!c.hello?.caps.includes("egress")) return undefined;
  return {
    onDial: (cb) => void c.on("dial", cb),
    onDns: (cb) => void c.on("dns", cb),
    accept: (id) => c.dialAccept(id),
    refuse: (id, code) => c.dialRefuse(id, code),
    dnsAnswer: (id, a) => c.dnsAnswer(id, a),
  };
}
