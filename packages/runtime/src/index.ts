import type { PostroomConfig } from "@postroom/config";
import { loadConfig } from "@postroom/config";
import { names as namesOf, streamDefinitions, streamsOf, type Names, type ServiceName } from "@postroom/contracts";
import { createPool, DATABASE_SERVICES, migrateWhenReachable, waitForSchema, type DatabaseService, type Pool } from "@postroom/db";
import { ensureStreams, type NatsConnection } from "@postroom/nats-kit";
import { createLogger, runService, type Logger, type Stoppable } from "@postroom/telemetry";
import { natsCheck, operationsHost, operationsPort, postgresCheck, startTelemetry, type Telemetry } from "@postroom/telemetry";
import { databaseConnectionFor } from "./database-connection.js";
import { connectService } from "./nats-connection.js";
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
  /** The service, used for logs, the NATS connection name, its NATS user's inbox and its streams. */
  name: ServiceName;
  /**
   * Opens a PostgreSQL pool before start. With the shared database.url the service applies
   * pending migrations itself; logged in as its own user (database.users, DATABASE_USER) it may
   * not, and waits until the set-up step has applied them.
   */
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
    const telemetry = await startTelemetry({ service: definition.name, port: operationsPort(env), host: operationsHost(env), logger });
    let started = false;
    telemetry.addReadinessCheck("started", () => started);
    const config = await loadConfig(env);
    // Ids in events and KV entries come from the bus; only configured ones become label values.
    telemetry.metrics.limitLabelsTo(config.tenants);
    const names = namesOf(config.nats.namespace);
    let pool: Pool | undefined;
    if (definition.database) {
      if (!(DATABASE_SERVICES as readonly string[]).includes(definition.name)) throw new Error(`${definition.name} has no database role (packages/db ownership map)`);
      const connection = await databaseConnectionFor(config, definition.name as DatabaseService, env);
      pool = createPool(connection.url, { tls: config.database.tls, onError: (e) => logger.warn({ problem: e.message }, "database connection lost") });
      if (connection.ownRole) {
        await waitForSchema(pool, {
          onWaiting: (missing, reason) => logger.warn({ missing, reason }, "waiting for the database set-up (postroom up, or the chart's db-setup Job) to apply migrations and grant this service's role"),
        });
      } else {
        // A database outage at start is waited out (logged), as one while running is.
        await migrateWhenReachable(pool, { onWait: (e, attempt) => logger.warn({ problem: (e as Error)?.message ?? String(e), attempt }, "database unavailable at start; waiting for it") });
      }
      telemetry.addReadinessCheck("postgres", postgresCheck(pool));
    }
    const nc = await connectService(config, definition.name, env);
    telemetry.addReadinessCheck("nats", natsCheck(nc));
    // Only the streams this service publishes to or consumes: its NATS user may administer no other.
    const own = new Set(streamsOf(names, definition.name));
    if (definition.streams !== false) await ensureStreams(nc, streamDefinitions(names, { replicas: config.nats.replicas }).filter((d) => own.has(d.name)));
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
export { startModuleWorker, WorkerLane } from "./worker.js";
export type { LaneResult, WorkerLaneOptions } from "./worker.js";
export { connectService, natsOptionsFor, deploymentTenant } from "./nats-connection.js";
export { databaseConnectionFor, databaseLogins, rolesConfigured, withCredentials } from "./database-connection.js";
export type { DatabaseConnection } from "./database-connection.js";
export { runDatabaseSetup } from "./database-setup.js";
export type { DatabaseSetupResult } from "./database-setup.js";
export { graphUserUrl, readGraphError, retryAfterMs } from "./graph.js";
export type { GraphErrorBody } from "./graph.js";
