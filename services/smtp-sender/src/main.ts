#!/usr/bin/env node
import { loadConfig } from "@postroom/config";
import { names as namesOf, streamDefinitions } from "@postroom/contracts";
import { createPool, migrate } from "@postroom/db";
import { connectNats, ensureStreams } from "@postroom/nats-kit";
import { createLogger, runService } from "@postroom/telemetry";
import { SmtpSender } from "./sender.js";

const logger = createLogger({ service: "smtp-sender" });

await runService(logger, async () => {
  const config = await loadConfig(process.env);
  const names = namesOf(config.nats.namespace);
  const pool = createPool(config.database.url, { onError: (e) => logger.warn({ problem: e.message }, "database connection lost") });
  await migrate(pool);
  const nc = await connectNats({ url: config.nats.url, name: `smtp-sender-${process.pid}` });
  await ensureStreams(nc, streamDefinitions(names, { replicas: config.nats.replicas }));
  const tenant = process.env.POSTROOM_TENANT || undefined;
  const sender = new SmtpSender({ nc, names, config, pool, logger, ...(tenant ? { tenant } : {}) });
  await sender.start();
  return {
    async stop() {
      await sender.stop();
      await nc.drain();
      await pool.end();
    },
  };
});
