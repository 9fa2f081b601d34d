import { createKvmBackend } from "@supermachine/hypervisor-kvm";
import { runConformance } from "../../../hypervisor/test/conformance";

// x86_64 microvm; on these machines KVM is PVM and unusable, so the suite forces TCG (accel: "tcg").
runConformance({
  name: "kvm",
  arch: "x86_64",
  qemuBinary: "qemu-system-x86_64",
  createBackend: () => createKvmBackend({ arch: "x86_64" }),
});
