#!/usr/bin/env node
import { loadConfig } from "@postroom/config";
import { names } from "@postroom/contracts";
import { connectNats, openKv } from "@postroom/nats-kit";
import { createLogger, runService } from "@postroom/telemetry";
import { CredentialService } from "./credential-service.js";

const logger = createLogger({ service: "token-service" });

await runService(logger, async () => {
  const config = await loadConfig(process.env);
  const nc = await connectNats({ url: config.nats.url, name: `token-service-${process.pid}` });
  const n = names(config.nats.namespace);
  const statusKv = await openKv(nc, n.buckets.mailboxStatus, { replicas: config.nats.replicas });
  const tenants = process.env.POSTROOM_TENANTS?.split(",").filter(Boolean);
  const service = new CredentialService({ nc, names: n, config, logger, statusKv, ...(tenants ? { tenants } : {}) });
  await service.start();
  return {
    async stop() {
      await service.stop();
      await nc.drain();
    },
  };
});
