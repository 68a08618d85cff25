import { connect, type NatsConnection } from "@nats-io/transport-node";

export interface ConnectOptions {
  /** Comma-separated server URLs. */
  url: string;
  /** Connection name shown in the server's monitoring (service name + pid). */
  name: string;
  /** Called on connection state changes, for logging. */
  onStatus?: (event: { type: string; data?: unknown }) => void;
}

/**
 * Connects with reconnection forever: a NATS outage pauses the service, it never kills it.
 * `waitOnFirstConnect` makes a service started before NATS wait for it instead of exiting.
 */
export async function connectNats(options: ConnectOptions): Promise<NatsConnection> {
  const nc = await connect({
    servers: options.url.split(",").map((s) => s.trim()),
    name: options.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1000,
    waitOnFirstConnect: true,
    timeout: 10_000,
  });
  if (options.onStatus) {
    const onStatus = options.onStatus;
    void (async () => {
      for await (const s of nc.status()) onStatus({ type: s.type, data: "data" in s ? s.data : undefined });
    })();
  }
  return nc;
}
