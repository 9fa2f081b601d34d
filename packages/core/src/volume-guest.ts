/**
 * Volumes inside the guest (README "Volumes"): find the guest mounts of volume devices, unmount them
 * before a capture so the snapshot holds no filesystem or cached block state of a volume, and mount them
 * again on every VM restored from it. Runs the image's own `/bin/sh`, `umount`, `mount` and `readlink`
 * through the agent, like the warmup's commands did.
 */
import { basename } from "node:path";
import { SupermachineError } from "./errors";
import type { AgentExecArgs, AgentPort } from "./ports";
import type { VolumeMount } from "./snapshot";

/** The guest device of the i-th volume: virtio-blk devices after the root disk, in declaration order. */
export function volumeDevice(i: number): string {
  return `/dev/vd${String.fromCharCode(98 + i)}`;
}

function sh(script: string, args: string[], timeoutMs: number): AgentExecArgs {
  return {
    argv: ["/bin/sh", "-c", script, "sh", ...args],
    env: {},
    cwd: "/",
    stage: [],
    timeoutMs,
    chain: null,
    tty: false,
    cols: 80,
    rows: 24,
  };
}

/** `\040`-style octal escapes of /proc/self/mountinfo fields. */
function unescapeField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

export interface MountinfoEntry {
  majorMinor: string;
  target: string;
  options: string[];
  fstype: string;
  source: string;
}

export function parseMountinfo(text: string): MountinfoEntry[] {
  const out: MountinfoEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    const sep = f.indexOf("-", 6);
    if (f.length < 10 || sep < 0) continue;
    out.push({
      majorMinor: f[2]!,
      target: unescapeField(f[4]!),
      options: f[5]!.split(","),
      fstype: f[sep + 1]!,
      source: unescapeField(f[sep + 2]!),
    });
  }
  return out;
}

/** Is `source` the device or one of its partitions (/dev/vdb, /dev/vdb1)? */
function onDevice(source: string, device: string): boolean {
  return source === device || (source.startsWith(device) && /^p?\d+$/.test(source.slice(device.length)));
}

/** Guest mounts of the given volume devices (or their partitions), in mount order. */
export async function findVolumeMounts(agent: AgentPort, devices: string[]): Promise<VolumeMount[]> {
  const numbers = new Map<string, string>();
  for (const d of devices) {
    try {
      const dev = (await agent.readFile(`/sys/class/block/${basename(d)}/dev`)).data.toString().trim();
      numbers.set(dev, d);
    } catch {
      /* no sysfs: match by source path only */
    }
  }
  const info = parseMountinfo((await agent.readFile("/proc/self/mountinfo")).data.toString());
  return info
    .filter((m) => numbers.has(m.majorMinor) || devices.some((d) => onDevice(m.source, d)))
    .map((m) => ({
      source: numbers.get(m.majorMinor) ?? m.source,
      target: m.target,
      fstype: m.fstype,
      readOnly: m.options.includes("ro"),
    }));
}

/**
 * $1 = how many mount points follow (innermost first), then the mount points, then the volume devices.
 * Unmount, sync, refuse while a process still holds a volume device open (its cached blocks would go
 * into the snapshot), and drop the clean caches (the kernel already drops a block device's cache at its
 * last close; this is belt and braces).
 */
const QUIESCE_SCRIPT = `n=$1; shift; i=0
while [ "$i" -lt "$n" ]; do
  umount "$1" || { echo "cannot unmount $1: a process still uses it (cwd or open file?)" >&2; exit 3; }
  shift; i=$((i+1))
done
sync
for f in /proc/[0-9]*/fd/*; do
  t=$(readlink "$f" 2>/dev/null) || continue
  for d in "$@"; do
    case "$t" in "$d"|"$d"[0-9]*|"$d"p[0-9]*) p=\${f#/proc/}; p=\${p%%/*}
      echo "$t is still open in guest process $p ($(cat /proc/$p/comm 2>/dev/null))" >&2; exit 4;; esac
  done
done
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true`;

/**
 * Before a capture: unmount every guest mount of a volume device (recorded and returned, to be mounted
 * again on every VM), so the snapshot holds neither a mounted filesystem nor cached blocks of a file that
 * later VMs change. Fails with SM_VOLUME_INVALID when a mount is busy or a process keeps a device open.
 */
export async function quiesceVolumes(agent: AgentPort, devices: string[]): Promise<VolumeMount[]> {
  if (devices.length === 0) return [];
  const mounts = await findVolumeMounts(agent, devices);
  const targets = mounts.map((m) => m.target).reverse();
  let r: Awaited<ReturnType<AgentPort["exec"]>>;
  try {
    r = await agent.exec(sh(QUIESCE_SCRIPT, [String(targets.length), ...targets, ...devices], 120_000));
  } catch (err) {
    // No /bin/sh in the image: nothing can have mounted a volume, and a closed device has no cache.
    if (mounts.length === 0) return [];
    throw err;
  }
  if (r.exitCode === 127 && mounts.length === 0) return [];
  if (r.exitCode !== 0) {
    throw new SupermachineError(
      "SM_VOLUME_INVALID",
      `Volumes must be released before the snapshot is captured, and the guest could not: ${r.stderr.toString().trim() || `exit ${r.exitCode}`}. Stop the warmup's processes that use the volume (or unmount it at the end of the warmup).`,
      { details: { mounts } },
    );
  }
  return mounts;
}

const MOUNT_SCRIPT = `while [ $# -gt 0 ]; do
  mkdir -p "$4" && mount -t "$1" -o "$2" "$3" "$4" || exit 1
  shift 4
done`;

/** Mount volumes in the guest, in order (after a restore, or `mount: true` before the warmup). */
export async function mountVolumes(agent: AgentPort, mounts: readonly VolumeMount[]): Promise<void> {
  if (mounts.length === 0) return;
  const args = mounts.flatMap((m) => [m.fstype, m.readOnly ? "ro" : "rw", m.source, m.target]);
  const r = await agent.exec(sh(MOUNT_SCRIPT, args, 60_000));
  if (r.exitCode !== 0) {
    const what = mounts.map((m) => `${m.source} on ${m.target} (${m.fstype})`).join(", ");
    throw new SupermachineError(
      "SM_VOLUME_INVALID",
      `Mounting volume(s) ${what} in the guest failed (exit ${r.exitCode}): ${r.stderr.toString().trim()}. The image needs /bin/sh and mount; a volume mounted with \`mount: true\` needs a filesystem (\`format: "ext4"\`, or format it beforehand).`,
      { details: { mounts } },
    );
  }
}
