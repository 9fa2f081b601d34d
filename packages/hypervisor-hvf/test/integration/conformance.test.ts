import { createHvfBackend } from "@supermachine/hypervisor-hvf";
import { runConformance } from "../../../hypervisor/test/conformance";

// The macOS backend's machine model (virt, arm64 Image, virtio-mmio devices) run with -accel tcg -cpu max on
// qemu-system-aarch64: everything but the HVF accelerator flag is exercised here.
runConformance({
  name: "hvf",
  arch: "aarch64",
  qemuBinary: "qemu-system-aarch64",
  createBackend: () => createHvfBackend(),
});
