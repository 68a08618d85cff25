import { createServer, type Server } from "node:net";

/**
 * Returns `count` distinct TCP ports that were free on `host` a moment ago.
 *
 * The kernel picks them (listen on port 0), all held open at once so they differ, then released for
 * the caller's server. Another process could grab one in between; servers started by this package
 * retry with fresh ports when a bind fails, which is cheaper than passing sockets around.
 */
export async function freePorts(count: number, host = "127.0.0.1"): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Server>((resolve, reject) => {
          const server = createServer();
          server.unref();
          server.once("error", reject);
          server.listen({ port: 0, host, exclusive: true }, () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const address = s.address();
    if (address === null || typeof address === "string") throw new Error("freePorts: no TCP address");
    return address.port;
  });
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}

/** One free loopback TCP port (see {@link freePorts}). */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const [port] = await freePorts(1, host);
  if (port === undefined) throw new Error("freePort: no port");
  return port;
}
