/** Glue between a VM handle and its Egress (kept out of vm.ts/pool.ts so those stay small). */
import { invalidOption } from "../errors";
import type { AgentPort } from "../ports";
import { Egress } from "./egress";
import { compilePolicy, type NetworkOption, parseNetwork } from "./policy";

/** The Egress enforcing n for this agent session, or undefined ("nat", or an agent without the cap). */
export function startEgress(agent: AgentPort, n: NetworkOption, vmId: number): Egress | undefined {
  if (n === "nat" || !agent.egress) return undefined;
  return new Egress(agent.egress, compilePolicy(n), vmId);
}

/** The policy of a pool's VMs: the pool's option, else the image's (older metadata: "none"). */
export function poolNetwork(
  override: NetworkOption | undefined,
  meta: { network: "none" | "nat"; networkPolicy?: NetworkOption },
): NetworkOption {
  const image = meta.networkPolicy ?? meta.network;
  if (override === undefined) return image;
  if (override === "nat" && image !== "nat")
    throw invalidOption(
      "network",
      '"nat" needs an image built with network "nat" (it adds a network device)',
    );
  return image === "nat" ? "nat" : override;
}

/** vm.setNetwork: validate, then swap the policy of the VM's Egress. */
export function setVmNetwork(h: { egress: Egress | undefined }, policy: unknown): void {
  const n = parseNetwork(policy);
  if (n === "nat") throw invalidOption("network", '"nat" cannot be switched on at run time');
  if (!h.egress)
    throw invalidOption("network", 'this VM has no host-enforced network (its image uses "nat")');
  h.egress.setPolicy(compilePolicy(n));
}
