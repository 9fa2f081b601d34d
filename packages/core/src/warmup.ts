/**
 * The WarmupVm handed to BuildOptions.warmup during a bake: exec only, and only until the callback
 * returns.
 */
import { SupermachineError } from "./errors";
import { execOn } from "./exec";
import type { ExecOptions, ExecOutput, WarmupVm } from "./types";
import type { VmHandle } from "./vm-handle";

/** The warmup facade: exec only, and only until the warmup callback returns. */
export class WarmupVmImpl implements WarmupVm {
  #open = true;
  constructor(private readonly handle: VmHandle) {}

  exec(options: ExecOptions): Promise<ExecOutput> {
    if (!this.#open) {
      return Promise.reject(
        new SupermachineError(
          "SM_WARMUP_OVER",
          "The warmup is over: a WarmupVm cannot be used after the warmup callback returned.",
        ),
      );
    }
    return execOn(this.handle, options);
  }

  get vsockPath(): string {
    throw new SupermachineError("SM_UNSUPPORTED", "vsockPath is not available on the WarmupVm.");
  }

  get execPath(): string {
    throw new SupermachineError("SM_UNSUPPORTED", "execPath is not available on the WarmupVm.");
  }

  get agentSocketPath(): string {
    throw new SupermachineError("SM_UNSUPPORTED", "agentSocketPath is not available on the WarmupVm.");
  }

  /** @internal */
  close(): void {
    this.#open = false;
  }
}
