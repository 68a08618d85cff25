import { createServer, type Server } from "node:net";

/**
 * Ports this process has already handed out. The kernel readily gives a just-released port again,
 * so two calls in a row (a SASL port for Postfix, then Dovecot's five) could otherwise return the
 * same number, and the second server would fail with "duplicate listener" or EADDRINUSE.
 */
const issued = new Set<number>();

function listenOnAnyPort(host: string): Promise<Server> {
  return new Promise<Server>((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen({ port: 0, host, exclusive: true }, () => resolve(server));
  });
}

function portOf(server: Server): number {
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("freePorts: no TCP address");
  return address.port;
}

/**
 * Returns `count` distinct TCP ports that were free on `host` a moment ago and that this process
 * has not handed out before.
 *
 * The kernel picks them (listen on port 0), all held open at once so they differ, then released for
 * the caller's server. Another process could grab one in between; servers started by this package
 * retry with fresh ports when a bind fails, which is cheaper than passing sockets around.
 */
export async function freePorts(count: number, host = "127.0.0.1"): Promise<number[]> {
  const held: Server[] = [];
  const ports: number[] = [];
  try {
    // A port issued earlier stays held (so the kernel cannot offer it again) until enough fresh
    // ones are found; the ephemeral range is tens of thousands wide, so this ends quickly.
    for (let tries = 0; ports.length < count; tries++) {
      if (tries > count + 1000) throw new Error(`freePorts: no ${count} unused ports on ${host}`);
      const server = await listenOnAnyPort(host);
      held.push(server);
      const port = portOf(server);
      if (issued.has(port)) continue;
      issued.add(port);
      ports.push(port);
    }
  } finally {
    await Promise.all(held.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
  return ports;
}

/** One free loopback TCP port (see {@link freePorts}). */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const [port] = await freePorts(1, host);
  if (port === undefined) throw new Error("freePort: no port");
  return port;
}
