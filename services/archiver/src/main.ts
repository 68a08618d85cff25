#!/usr/bin/env node
import { consumerLagReader } from "@postroom/nats-kit";
import { runPostroomService } from "@postroom/runtime";
import { Archiver } from "./archiver.js";

await runPostroomService({
  name: "archiver",
  database: true,
  async start({ nc, names, config, pool, logger, env, telemetry }) {
    const tenant = env.POSTROOM_TENANT || undefined;
    const archiver = new Archiver({ nc, names, config, pool: pool!, logger, ...(tenant ? { tenant } : {}) });
    await archiver.start();
    telemetry.metrics.observeConsumers(
      consumerLagReader(nc, [
        { stream: names.streams.mail, durable: names.consumers.archiverReceived(tenant) },
        { stream: names.streams.mail, durable: names.consumers.archiverSent(tenant) },
      ]),
    );
    return archiver;
  },
});
