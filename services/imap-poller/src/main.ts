#!/usr/bin/env node
import { loadConfig } from "@postroom/config";
import { names as namesOf, streamDefinitions } from "@postroom/contracts";
import { connectNats, ensureStreams } from "@postroom/nats-kit";
import { createLogger, runService } from "@postroom/telemetry";
import { Poller } from "./poller.js";

const logger = createLogger({ service: "imap-poller" });

await runService(logger, async () => {
  const config = await loadConfig(process.env);
  const names = namesOf(config.nats.namespace);
  const nc = await connectNats({ url: config.nats.url, name: `imap-poller-${process.pid}` });
  await ensureStreams(nc, streamDefinitions(names, { replicas: config.nats.replicas }));
  const tenants = process.env.POSTROOM_TENANTS?.split(",").filter(Boolean);
  const poller = new Poller({ nc, names, config, logger, ...(tenants ? { tenants } : {}) });
  await poller.start();
  return {
    async stop() {
      await poller.stop();
      await nc.drain();
    },
  };
});
