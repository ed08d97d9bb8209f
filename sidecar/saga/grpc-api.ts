/**
 * The saga control API over gRPC (@grpc/grpc-js), beside the HTTP JSON one, with the same
 * engine behind both. Executions travel as their JSON form inside the messages, so the
 * schema of an execution is defined once (sidecar/saga/machine.ts). `aimesh saga proto`
 * prints the .proto for generating clients.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AimeshError } from '../../lib/errors/index.js';
import { grpcStatusOf } from '../error-response.js';
import type { ControlAuth } from './auth.js';
import type { SagaEngine } from './engine.js';
import type { Execution } from './machine.js';

export const SAGA_PROTO = `syntax = "proto3";

package aimesh.saga.v1;

// Runs sagas on an orchestrator's sidecar (port 4703). With a control token configured,
// every call carries the metadata "authorization: Bearer <token>".
service Sagas {
  // Starts an execution; a repeated idempotency key returns the existing one (created = false).
  rpc Start (StartRequest) returns (StartResponse);
  rpc Get (ExecutionRef) returns (Execution);
  rpc List (ListRequest) returns (ListResponse);
  // Compensates an execution that has not passed its pivot.
  rpc Cancel (ExecutionRef) returns (Execution);
  // Returns once the execution has finished, or when timeout_ms is up.
  rpc Wait (WaitRequest) returns (Execution);
  // The execution now and after every change, until it has finished.
  rpc Watch (ExecutionRef) returns (stream Execution);
}

message StartRequest {
  string saga = 1;
  string input_json = 2;
  string idempotency_key = 3;
}
message StartResponse {
  Execution execution = 1;
  bool created = 2;
}
message ExecutionRef { string id = 1; }
message WaitRequest {
  string id = 1;
  uint32 timeout_ms = 2;
}
message ListRequest {
  string saga = 1;
  string state = 2;
}
message ListResponse { repeated Execution executions = 1; }

message Execution {
  string id = 1;
  string saga = 2;
  string state = 3;
  string idempotency_key = 4;
  string reason = 5;
  // The whole execution (steps, responses, attempts) as JSON.
  string json = 6;
}
`;

interface ExecutionMessage {
  id: string;
  saga: string;
  state: string;
  idempotency_key: string;
  reason: string;
  json: string;
}

export function sagaServiceDefinition(): grpc.ServiceDefinition {
  // proto-loader reads files: write the embedded proto once, named by its content.
  const folder = join(tmpdir(), 'aimesh-proto');
  mkdirSync(folder, { recursive: true });
  const file = join(
    folder,
    `saga-${createHash('sha256').update(SAGA_PROTO).digest('hex').slice(0, 12)}.proto`,
  );
  writeFileSync(file, SAGA_PROTO);
  const definition = protoLoader.loadSync(file, { keepCase: true, defaults: true });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    aimesh: { saga: { v1: { Sagas: grpc.ServiceClientConstructor } } };
  };
  return loaded.aimesh.saga.v1.Sagas.service;
}

export async function startSagaGrpcApi(
  engine: SagaEngine,
  host: string,
  port: number,
  auth?: ControlAuth,
): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  /** The token travels as `authorization` metadata, as gRPC call credentials send it. */
  const authenticate = async (metadata: grpc.Metadata) => {
    const value = metadata.get('authorization')[0];
    auth?.(typeof value === 'string' ? value : undefined);
  };
  const unary =
    <Req, Res>(handler: (request: Req) => Promise<Res>) =>
    (call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>) => {
      authenticate(call.metadata)
        .then(() => handler(call.request))
        .then(
          (result) => callback(null, result),
          (error: unknown) => callback(grpcStatusOf(error)),
        );
    };
  server.addService(sagaServiceDefinition(), {
    Start: unary(async (request: { saga: string; input_json: string; idempotency_key: string }) => {
      let input: unknown;
      try {
        input = request.input_json ? (JSON.parse(request.input_json) as unknown) : {};
      } catch (error) {
        throw new AimeshError('input.invalid', `input_json is not valid JSON: ${(error as Error).message}`);
      }
      const { execution, created } = await engine.start(request.saga, input, request.idempotency_key);
      return { execution: toMessage(execution), created };
    }),
    Get: unary(async (request: { id: string }) => toMessage(await engine.get(request.id))),
    List: unary(async (request: { saga: string; state: string }) => ({
      executions: (
        await engine.list({ saga: request.saga || undefined, state: request.state || undefined })
      ).map(toMessage),
    })),
    Cancel: unary(async (request: { id: string }) => toMessage(await engine.cancel(request.id))),
    Wait: unary(async (request: { id: string; timeout_ms: number }) =>
      toMessage(await engine.waitFor(request.id, Math.min(request.timeout_ms || 30_000, 300_000))),
    ),
    Watch: (call: grpc.ServerWritableStream<{ id: string }, ExecutionMessage>) => {
      authenticate(call.metadata)
        .then(() => engine.get(call.request.id))
        .then(
          (current) => {
            call.write(toMessage(current));
            if (['completed', 'compensated', 'compensation-failed'].includes(current.state))
              return call.end();
            const stop = engine.onChange(call.request.id, (execution) => {
              call.write(toMessage(execution));
              if (['completed', 'compensated', 'compensation-failed'].includes(execution.state)) {
                stop();
                call.end();
              }
            });
            call.on('cancelled', stop);
          },
          // grpc-js ends a server stream with a status on an 'error' event; destroy() would
          // leave the caller waiting with no status at all.
          (error: unknown) => call.emit('error', { ...grpcStatusOf(error), metadata: new grpc.Metadata() }),
        );
    },
  });
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (error, actual) =>
      error ? reject(error) : resolve(actual),
    ),
  );
  return { server, port: bound };
}

function toMessage(execution: Execution): ExecutionMessage {
  return {
    id: execution.id,
    saga: execution.saga,
    state: execution.state,
    idempotency_key: execution.idempotencyKey,
    reason: execution.reason ?? '',
    json: JSON.stringify(execution),
  };
}
