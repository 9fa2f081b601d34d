/** The EgressPort of an AgentClient session (SPEC 6.5), used by runtime.ts's adapter. */
import type { AgentClient } from "@supermachine/agent-protocol";
import type { EgressPort } from "./egress";

/** Events that arrive before core attaches its Egress (a workload connecting during boot) wait here. */
const EARLY_MAX = 128;

/** undefined when the agent did not announce the `egress` cap (older agent, or a "nat" VM). */
export function egressPortOf(c: AgentClient): EgressPort | undefined {
  if (!c.hello?.caps.includes("egress")) return undefined;
  type Dial = { id: number; addr: string; port: number };
  type Dns = { id: number; q: Buffer };
  const early: ({ dial: Dial } | { dns: Dns })[] = [];
  let onDial: ((d: Dial) => void) | undefined;
  let onDns: ((q: Dns) => void) | undefined;
  c.on("dial", (d) => {
    if (onDial) onDial(d);
    else if (early.length < EARLY_MAX) early.push({ dial: d });
    // beyond that the agent fails the connect itself after its 30 s dial timeout
  });
  c.on("dns", (q) => {
    if (onDns) onDns(q);
    else if (early.length < EARLY_MAX) early.push({ dns: q });
  });
  const flush = () => {
    if (!onDial || !onDns) return;
    for (const e of early.splice(0)) {
      if ("dial" in e) onDial(e.dial);
      else onDns(e.dns);
    }
  };
  return {
    onDial: (cb) => {
      onDial = cb;
      flush();
    },
    onDns: (cb) => {
      onDns = cb;
      flush();
    },
    accept: (id) => c.dialAccept(id),
    refuse: (id, code) => c.dialRefuse(id, code),
    dnsAnswer: (id, a) => c.dnsAnswer(id, a),
  };
}
