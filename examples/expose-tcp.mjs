// expose-tcp: a service image (busybox httpd on ports 80 and 8080), baked once it listens; each guest
// port is reachable from the host through its own forwarder on 127.0.0.1.
//   node examples/expose-tcp.mjs
import { Image } from "@supermachine/core";
import { registry, runIfMain } from "./_registry.mjs";

export async function main({ log = console.log } = {}) {
  const image = await Image.build({
    ref: `${registry()}/httpd:latest`,
    listenerRequired: true,
    guestPort: 80,
  });
  const pool = await image.pool();
  try {
    const vm = await pool.acquire();
    const web = await vm.exposeTcp(0, 80);
    const alt = await vm.exposeTcp(0, 8080);
    for (const [name, fwd] of [
      ["port 80", web],
      ["port 8080", alt],
    ]) {
      const res = await fetch(`http://${fwd.localAddr}/`);
      const body = (await res.text()).trim();
      log(`${name} via ${fwd.localAddr}: HTTP ${res.status} ${body.split("\n")[0]}`);
    }
    await web.stop();
    await alt.stop();
    await vm.release();
  } finally {
    await pool.shutdown();
  }
}

runIfMain(import.meta, main);
