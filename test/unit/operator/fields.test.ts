import { describe, expect, it } from '@jest/globals';
import type { KubernetesObject } from '@kubernetes/client-node';
import { containsDesired } from '../../../operator/controller/compare.js';
import { appliedFields, projectFields } from '../../../operator/kube/fields.js';
import { trimChild, type LiveObject } from '../../../operator/watches.js';

/** A Service as the API server returns it after our apply and a hand edit of its selector. */
function liveService(selectorOwner: 'aimesh-operator' | 'kubectl-patch'): LiveObject {
  const ours = {
    'f:metadata': { 'f:labels': { 'f:app': {} }, 'f:ownerReferences': { 'k:{"uid":"u1"}': {} } },
    'f:spec': {
      'f:ports': {
        'k:{"port":80,"protocol":"TCP"}': {
          '.': {},
          'f:name': {},
          'f:port': {},
          'f:protocol': {},
          'f:targetPort': {},
        },
      },
      ...(selectorOwner === 'aimesh-operator' ? { 'f:selector': {} } : {}),
    },
  };
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: 'svc',
      namespace: 'ns',
      uid: 's1',
      resourceVersion: '7',
      labels: { app: 'svc', added: 'by-someone-else' },
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"a":"big copy"}' },
      ownerReferences: [
        { apiVersion: 'aimesh.io/v1alpha1', uid: 'u1', kind: 'AiService', name: 'svc', controller: true },
      ],
      managedFields: [
        { manager: 'aimesh-operator', operation: 'Apply', fieldsType: 'FieldsV1', fieldsV1: ours },
        ...(selectorOwner === 'kubectl-patch'
          ? [
              {
                manager: 'kubectl-patch',
                operation: 'Update',
                fieldsType: 'FieldsV1',
                fieldsV1: { 'f:spec': { 'f:selector': {} } },
              },
            ]
          : []),
      ],
    } as LiveObject['metadata'],
    spec: {
      clusterIP: '10.0.0.9',
      sessionAffinity: 'None',
      ports: [
        { name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 },
        { name: 'extra', port: 9090, protocol: 'TCP', targetPort: 9090 },
      ],
      selector: { app: selectorOwner === 'aimesh-operator' ? 'svc' : 'edited' },
    },
  } as LiveObject;
}

const desired = {
  apiVersion: 'v1',
  kind: 'Service',
  metadata: {
    name: 'svc',
    namespace: 'ns',
    labels: { app: 'svc' },
    ownerReferences: [
      { apiVersion: 'aimesh.io/v1alpha1', uid: 'u1', kind: 'AiService', name: 'svc', controller: true },
    ],
  },
  spec: { ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }], selector: { app: 'svc' } },
};

describe('a child as cached: only the fields the operator applied', () => {
  it("keeps identity, owners and our fields; drops defaults, others' fields and managedFields", () => {
    const trimmed = trimChild(liveService('aimesh-operator'));
    expect(trimmed).toEqual({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: {
        name: 'svc',
        namespace: 'ns',
        uid: 's1',
        resourceVersion: '7',
        labels: { app: 'svc' },
        ownerReferences: [
          { apiVersion: 'aimesh.io/v1alpha1', uid: 'u1', kind: 'AiService', name: 'svc', controller: true },
        ],
      },
      spec: {
        ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }],
        selector: { app: 'svc' },
      },
    });
    expect(containsDesired(trimmed, desired)).toBe(true);
  });

  it('no longer matches what render wants once a hand edit took a field over', () => {
    expect(containsDesired(trimChild(liveService('kubectl-patch')), desired)).toBe(false);
  });

  it('keeps nothing but identity for an object the operator never applied', () => {
    const live = liveService('aimesh-operator') as KubernetesObject;
    live.metadata = { ...live.metadata, managedFields: [] };
    const trimmed = trimChild(live as LiveObject);
    expect(trimmed.metadata.labels).toBeUndefined();
    expect(containsDesired(trimmed, desired)).toBe(false);
  });

  it('keeps a Deployment the status fields its AiService reports from', () => {
    const trimmed = trimChild({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'd', namespace: 'ns', generation: 3 },
      status: {
        observedGeneration: 3,
        replicas: 2,
        updatedReplicas: 2,
        readyReplicas: 1,
        availableReplicas: 1,
        unavailableReplicas: 1,
        conditions: [
          {
            type: 'Available',
            status: 'False',
            reason: 'MinimumReplicasUnavailable',
            message: 'm',
            lastUpdateTime: 't',
          },
        ],
      },
    });
    expect(trimmed.status).toEqual({
      observedGeneration: 3,
      replicas: 2,
      updatedReplicas: 2,
      readyReplicas: 1,
      availableReplicas: 1,
      conditions: [
        { type: 'Available', status: 'False', reason: 'MinimumReplicasUnavailable', message: 'm' },
      ],
    });
  });
});

describe('fieldsV1 projection', () => {
  it('selects list items by keys, set values and index, keeping atomic values whole', () => {
    const value = {
      containers: [
        { name: 'app', image: 'a', args: ['x', 'y'], defaulted: true },
        { name: 'other', image: 'b' },
      ],
      finalizers: ['ours', 'theirs'],
      pair: ['first', 'second'],
    };
    const fields = {
      'f:containers': { 'k:{"name":"app"}': { '.': {}, 'f:name': {}, 'f:image': {}, 'f:args': {} } },
      'f:finalizers': { 'v:"ours"': {} },
      'f:pair': { 'i:1': {} },
    };
    expect(projectFields(value, fields)).toEqual({
      containers: [{ name: 'app', image: 'a', args: ['x', 'y'] }],
      finalizers: ['ours'],
      pair: ['second'],
    });
  });

  it("merges the manager's Apply entries and ignores its status and Update entries", () => {
    const object = {
      metadata: {
        managedFields: [
          { manager: 'aimesh-operator', operation: 'Apply', fieldsType: 'FieldsV1', fieldsV1: { 'f:a': {} } },
          { manager: 'aimesh-operator', operation: 'Apply', fieldsType: 'FieldsV1', fieldsV1: { 'f:b': {} } },
          {
            manager: 'aimesh-operator',
            operation: 'Apply',
            subresource: 'status',
            fieldsType: 'FieldsV1',
            fieldsV1: { 'f:status': {} },
          },
          {
            manager: 'aimesh-operator',
            operation: 'Update',
            fieldsType: 'FieldsV1',
            fieldsV1: { 'f:c': {} },
          },
        ],
      },
    } as KubernetesObject;
    expect(appliedFields(object, 'aimesh-operator')).toEqual({ 'f:a': {}, 'f:b': {} });
    expect(appliedFields(object, 'someone-else')).toBeUndefined();
  });
});
