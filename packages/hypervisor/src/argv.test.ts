import { describe, expect, it } from "vitest";
import { baseCmdline, buildQemuArgv, devicesFor, type MachineProfile, qemuEscape } from "./argv";

const profile: MachineProfile = {
  backend: "test",
  arch: "x86_64",
  qemuBinary: "qemu-system-x86_64",
  machine: "microvm,rtc=off",
  consoleDevice: "ttyS0",
  cpuFor: (a) => (a === "kvm" ? "host" : "max"),
  accelArg: (a) => (a === "tcg" ? "tcg,thread=multi" : a),
  installHint: "apt-get install qemu-system-x86",
};

const spec = (over: Partial<Parameters<typeof buildQemuArgv>[1]> = {}) => ({
  accel: "tcg" as const,
  memoryMib: 256,
  vcpus: 2,
  kernelPath: "/k/vmlinux",
  initrdPath: "/k/initrd",
  cmdline: baseCmdline("ttyS0"),
  memPath: "/dev/shm/supermachine/vm1/memory",
  memShare: true,
  devices: devicesFor({
    rootfs: "/img/rootfs.sqfs",
    volumes: [{ path: "/vol/a.img", readOnly: false }],
    network: "restricted",
    vsock: false,
    vsockCid: 3,
  }),
  qmpSocket: "/rt/qmp.sock",
  agentSocket: "/rt/agent.sock",
  consoleLog: "/rt/console.log",
  incoming: false,
  ...over,
});

const after = (argv: string[], flag: string) => argv.filter((_, i) => argv[i - 1] === flag);

describe("buildQemuArgv", () => {
  it("boots with shared file-backed RAM, the accelerator's CPU and no default devices", () => {
    const a = buildQemuArgv(profile, spec());
    expect(after(a, "-M")).toEqual(["microvm,rtc=off,memory-backend=mem"]);
    expect(after(a, "-accel")).toEqual(["tcg,thread=multi"]);
    expect(after(a, "-cpu")).toEqual(["max"]);
    expect(after(a, "-smp")).toEqual(["2"]);
    expect(a).toContain("-nodefaults");
    expect(a).toContain("-no-reboot");
    expect(after(a, "-object")[0]).toBe(
      "memory-backend-file,id=mem,size=256M,mem-path=/dev/shm/supermachine/vm1/memory,share=on",
    );
    expect(after(a, "-append")).toEqual(["console=ttyS0 quiet reboot=t panic=-1 rdinit=/init"]);
    expect(a).not.toContain("-incoming");
  });

  it("attaches the rootfs read-only first, volumes read-write next, then agent port, rng and a restricted NIC", () => {
    const a = buildQemuArgv(profile, spec());
    expect(after(a, "-drive")).toEqual([
      "id=rootfs,file=/img/rootfs.sqfs,format=raw,if=none,read-only=on",
      "id=vol0,file=/vol/a.img,format=raw,if=none",
    ]);
    expect(after(a, "-device")).toEqual([
      "virtio-blk-device,drive=rootfs",
      "virtio-blk-device,drive=vol0",
      "virtio-serial-device,id=vser0",
      "virtserialport,bus=vser0.0,chardev=agent,name=agent",
      "virtio-rng-device,rng=rng0",
      "virtio-net-device,netdev=net0",
    ]);
    expect(after(a, "-chardev")).toEqual([
      "socket,id=agent,path=/rt/agent.sock,server=on,wait=off",
      "file,id=con0,path=/rt/console.log,append=on",
    ]);
    expect(after(a, "-netdev")).toEqual(["user,id=net0,restrict=on"]);
    expect(after(a, "-qmp")).toEqual(["unix:/rt/qmp.sock,server=on,wait=off"]);
    expect(after(a, "-serial")).toEqual(["chardev:con0"]);
  });

  it("nat has no restrict flag; none has no NIC", () => {
    const nat = buildQemuArgv(
      profile,
      spec({ devices: devicesFor({ volumes: [], network: "nat", vsock: false, vsockCid: 3 }) }),
    );
    expect(after(nat, "-netdev")).toEqual(["user,id=net0"]);
    const none = buildQemuArgv(
      profile,
      spec({ devices: devicesFor({ volumes: [], network: "none", vsock: true, vsockCid: 7 }) }),
    );
    expect(none).not.toContain("-netdev");
    expect(after(none, "-device")).toContain("vhost-vsock-device,id=vsock0,guest-cid=7");
  });

  it("restores with a private (copy-on-write) mapping and -incoming defer", () => {
    const a = buildQemuArgv(
      profile,
      spec({ memShare: false, memPath: "/snap/memory", incoming: true, extraArgs: ["-S"] }),
    );
    expect(after(a, "-object")[0]).toContain("mem-path=/snap/memory,share=off");
    expect(after(a, "-incoming")).toEqual(["defer"]);
    expect(a[a.length - 1]).toBe("-S");
  });

  it("escapes commas in paths inside option strings", () => {
    expect(qemuEscape("/a,b/c")).toBe("/a,,b/c");
    const a = buildQemuArgv(profile, spec({ memPath: "/x,y/memory" }));
    expect(after(a, "-object")[0]).toContain("mem-path=/x,,y/memory,");
  });

  it("uses the kvm CPU model for kvm", () => {
    const a = buildQemuArgv(profile, spec({ accel: "kvm" }));
    expect(after(a, "-accel")).toEqual(["kvm"]);
    expect(after(a, "-cpu")).toEqual(["host"]);
  });
});
