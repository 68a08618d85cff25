#!/usr/bin/env node
import { consumerLagReader } from "@postroom/nats-kit";
import { runPostroomService, sessionCounts } from "@postroom/runtime";
import { AsdBridge } from "./bridge.js";

await runPostroomService({
  name: "asd-bridge",
  database: true,
  async start({ nc, names, config, pool, logger, env, telemetry }) {
    const tenant = env.POSTROOM_TENANT || undefined;
    const bridge = new AsdBridge({ nc, names, config, pool: pool!, logger, metrics: telemetry.metrics, ...(tenant ? { tenant } : {}) });
    await bridge.start();
    telemetry.metrics.observeAcd(() => bridge.acdStatuses());
    telemetry.metrics.observeConsumers(consumerLagReader(nc, [{ stream: names.streams.mail, durable: names.consumers.asdBridgeArchived(tenant) }]));
    telemetry.metrics.observeSessions(sessionCounts(pool!, tenant));
    return bridge;
  },
});
