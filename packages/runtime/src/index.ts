import type { PostroomConfig } from "@postroom/config";
import { loadConfig } from "@postroom/config";
import { names as namesOf, streamDefinitions, type Names } from "@postroom/contracts";
import { createPool, migrate, type Pool } from "@postroom/db";
import { connectNats, ensureStreams, type NatsConnection } from "@postroom/nats-kit";
import { createLogger, runService, type Logger, type Stoppable } from "@postroom/telemetry";
import { natsCheck, operationsPort, postgresCheck, startTelemetry, type Telemetry } from "@postroom/telemetry";
import { recordEmittedEvents } from "./observe.js";

/** What every service gets at start-up. */
export interface ServiceContext {
  config: PostroomConfig;
  names: Names;
  nc: NatsConnection;
  logger: Logger;
  /** Present when the service asked for the database (migrations already applied). */
  pool: Pool | undefined;
  /** POSTROOM_TENANTS (comma-separated): serve only these tenants; undefined = all. */
  tenants: string[] | undefined;
  env: NodeJS.ProcessEnv;
  /**
   * Traces, metrics and the /metrics, /healthz, /readyz endpoint (on POSTROOM_HTTP_PORT when set).
   * NATS and PostgreSQL readiness are registered already; a service adds its own checks.
   */
  telemetry: Telemetry;
}

export interface ServiceDefinition {
  /** kebab-case service name, used for logs and the NATS connection name. */
  name: string;
  /** Opens a PostgreSQL pool and applies pending migrations before start. */
  database?: boolean;
  /** Creates the JetStream streams if missing (every service that publishes or consumes). */
  streams?: boolean;
  /** Starts the service's components and returns what stop() must stop first. */
  start(context: ServiceContext): Promise<Stoppable>;
}

/**
 * The one main() of every service: load the config, connect, start, and on SIGTERM stop in
 * reverse order — the service's components first (they finish the message in hand and ack it),
 * then NATS (drain flushes pending publishes), then the database pool.
 */
export async function runPostroomService(definition: ServiceDefinition, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const logger = createLogger({ service: definition.name });
  await runService(logger, async () => {
    // First: instruments created before the meter provider exists stay no-ops, and the endpoint
    // answers /healthz while the service still waits for NATS or PostgreSQL.
    const telemetry = await startTelemetry({ service: definition.name, port: operationsPort(env), logger });
    let started = false;
    telemetry.addReadinessCheck("started", () => started);
    const config = await loadConfig(env);
    const names = namesOf(config.nats.namespace);
    let pool: Pool | undefined;
    if (definition.database) {
      pool = createPool(config.database.url, { onError: (e) => logger.warn({ problem: e.message }, "database connection lost") });
      await migrate(pool);
      telemetry.addReadinessCheck("postgres", postgresCheck(pool));
    }
    const nc = await connectNats({ url: config.nats.url, name: `${definition.name}-${process.pid}` });
    telemetry.addReadinessCheck("nats", natsCheck(nc));
    if (definition.streams !== false) await ensureStreams(nc, streamDefinitions(names, { replicas: config.nats.replicas }));
    const tenants = env.POSTROOM_TENANTS?.split(",").map((t) => t.trim()).filter(Boolean);
    const stopRecording = recordEmittedEvents({ telemetry, names, pool, logger });
    const service = await definition.start({ config, names, nc, logger, pool, tenants: tenants?.length ? tenants : undefined, env, telemetry });
    started = true;
    return {
      async stop() {
        await service.stop();
        await nc.drain();
        stopRecording();
        await pool?.end();
        // Last, so the spans of the final messages are exported.
        await telemetry.stop();
      },
    };
  });
}
export { recordEmittedEvents, watchMailboxStatus, sessionCounts } from "./observe.js";
