import { connect, type NatsConnection } from "@nats-io/transport-node";

export interface ConnectOptions {
  /** Comma-separated server URLs. */
  url: string;
  /** Connection name shown in the server's monitoring (service name + pid). */
  name: string;
  /** Called on connection state changes, for logging. */
  onStatus?: (event: { type: string; data?: unknown }) => void;
  /** The service's own NATS user and password (least-privilege permissions per service). */
  user?: string | undefined;
  password?: string | undefined;
  /**
   * Prefix of this connection's reply inboxes (contracts' `inboxPrefix(service)`): the
   * permissions let only this service subscribe there, so no one else reads its replies.
   */
  inboxPrefix?: string | undefined;
  /**
   * Wait (retrying forever) for a first connection (default true: a service started before NATS
   * waits). false: a refused first connection (a TLS or authorization failure) rejects at once.
   */
  waitOnFirstConnect?: boolean | undefined;
  /** TLS: the CA to trust (PEM file), an optional client certificate and key, and whether to verify (default true). */
  tls?: { caFile?: string | undefined; certFile?: string | undefined; keyFile?: string | undefined; verify?: boolean | undefined } | undefined;
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
    waitOnFirstConnect: options.waitOnFirstConnect ?? true,
    timeout: 10_000,
    // Without this nats.js builds an Error (stack trace included) for every request, publish and
    // ackAck just in case it times out — on the happy path, thousands a second in a busy service.
    // A timeout still says what timed out (subject, operation); only the caller's stack is lost.
    noAsyncTraces: true,
    ...(options.user !== undefined ? { user: options.user, pass: options.password ?? "" } : {}),
    ...(options.inboxPrefix !== undefined ? { inboxPrefix: options.inboxPrefix } : {}),
    ...(options.tls ? { tls: tlsOptions(options.tls) } : {}),
  });
  if (options.onStatus) {
    const onStatus = options.onStatus;
    void (async () => {
      for await (const s of nc.status()) onStatus({ type: s.type, data: "data" in s ? s.data : undefined });
    })();
  }
  return nc;
}

/** nats.js TLS options: files read by the Node transport; verification on unless switched off. */
function tlsOptions(tls: NonNullable<ConnectOptions["tls"]>): Record<string, unknown> {
  return {
    ...(tls.caFile ? { caFile: tls.caFile } : {}),
    ...(tls.certFile ? { certFile: tls.certFile } : {}),
    ...(tls.keyFile ? { keyFile: tls.keyFile } : {}),
    ...(tls.verify === false ? { rejectUnauthorized: false } : {}),
  };
}
