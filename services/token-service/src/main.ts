#!/usr/bin/env node
import { runPostroomService } from "@postroom/runtime";
import { CredentialService } from "./credential-service.js";

await runPostroomService({
  name: "token-service",
  // Request-reply only: token-service neither publishes to nor consumes from a stream.
  streams: false,
  async start({ nc, names, config, logger, tenants }) {
    const service = new CredentialService({ nc, names, config, logger, ...(tenants ? { tenants } : {}) });
    await service.start();
    return service;
  },
});
