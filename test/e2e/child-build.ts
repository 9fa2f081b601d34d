// Test child: build an image and report whether this process baked (saw the "boot" phase).
// argv: ref snapshotsDir
import { Image } from "@supermachine/core";

const [ref, snapshotsDir] = process.argv.slice(2);
let baked = false;
const img = await Image.build({
  ref: ref!,
  snapshotsDir: snapshotsDir!,
  onProgress: (e) => {
    if (e.phase === "boot") baked = true;
  },
});
// biome-ignore lint/suspicious/noExplicitAny: internal handoff VM, stopped so the child exits at once
await (img as any).takeHandoff()?.stop();
process.stdout.write(`${JSON.stringify({ baked, path: img.snapshotPath })}\n`);
process.exit(0);
