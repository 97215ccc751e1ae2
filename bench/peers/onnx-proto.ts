// A minimal protobuf writer for the parts of onnx.proto (IR version 8) that an in-memory
// inference model needs. Field numbers, from onnx/onnx.proto:
//   ModelProto:         ir_version 1 (int64), producer_name 2, graph 7, opset_import 8
//   OperatorSetIdProto: domain 1 (string), version 2 (int64)
//   GraphProto:         node 1, name 2, initializer 5, input 11, output 12
//   NodeProto:          input 1, output 2, name 3, op_type 4, attribute 5, domain 7
//   AttributeProto:     name 1, f 2 (float), i 3 (int64), s 4 (bytes), t 5, floats 7, ints 8,
//                       type 20 (FLOAT 1, INT 2, STRING 3, TENSOR 4, FLOATS 6, INTS 7)
//   ValueInfoProto:     name 1, type 2
//   TypeProto:          tensor_type 1 → TypeProto.Tensor: elem_type 1 (int32), shape 2
//   TensorShapeProto:   dim 1 → Dimension: dim_value 1 (int64), dim_param 2 (string)
//   TensorProto:        dims 1 (int64), data_type 2 (int32), name 8, raw_data 9 (little-endian)
//   TensorProto.DataType: FLOAT 1, INT32 6, INT64 7, BOOL 9, DOUBLE 11
// Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.

export const DataType = { FLOAT: 1, INT32: 6, INT64: 7, BOOL: 9, DOUBLE: 11 } as const;
const AttrType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, FLOATS: 6, INTS: 7 } as const;

/** Appends protobuf fields to a growable byte buffer. */
class Writer {
  private buf = new Uint8Array(256);
  private len = 0;

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  /** Unsigned varint of a non-negative value, or a negative int64 as its 10-byte two's complement. */
  private varint(value: number | bigint): void {
    let v = BigInt.asUintN(64, BigInt(value));
    this.reserve(10);
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v !== 0n) byte |= 0x80;
      this.buf[this.len++] = byte;
    } while (v !== 0n);
  }

  private tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  int(field: number, value: number | bigint): this {
    this.tag(field, 0);
    this.varint(value);
    return this;
  }

  float(field: number, value: number): this {
    this.tag(field, 5);
    this.reserve(4);
    new DataView(this.buf.buffer, this.buf.byteOffset + this.len, 4).setFloat32(0, value, true);
    this.len += 4;
    return this;
  }

  bytes(field: number, data: Uint8Array): this {
    this.tag(field, 2);
    this.varint(data.length);
    this.reserve(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }

  message(field: number, build: (w: Writer) => void): this {
    const inner = new Writer();
    build(inner);
    return this.bytes(field, inner.finish());
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

export type AttrValue =
  | { f: number }
  | { i: number }
  | { s: string }
  | { floats: number[] }
  | { ints: number[] };

export interface NodeSpec {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs?: Record<string, AttrValue>;
}

export interface ValueSpec {
  name: string;
  type: number; // DataType
  dims: number[];
}

export interface InitializerSpec {
  name: string;
  type: number; // DataType
  dims: number[];
  raw: Uint8Array; // little-endian element bytes
}

export interface ModelSpec {
  opset: number;
  irVersion: number;
  nodes: NodeSpec[];
  inputs: ValueSpec[];
  outputs: ValueSpec[];
  initializers: InitializerSpec[];
  graphName?: string;
}

function writeAttr(w: Writer, name: string, v: AttrValue): void {
  w.string(1, name);
  if ('f' in v) w.float(2, v.f).int(20, AttrType.FLOAT);
  else if ('i' in v) w.int(3, v.i).int(20, AttrType.INT);
  else if ('s' in v) w.string(4, v.s).int(20, AttrType.STRING);
  else if ('floats' in v) {
    for (const x of v.floats) w.float(7, x); // unpacked repeated floats: always accepted
    w.int(20, AttrType.FLOATS);
  } else {
    for (const x of v.ints) w.int(8, x);
    w.int(20, AttrType.INTS);
  }
}

function writeValueInfo(w: Writer, v: ValueSpec): void {
  w.string(1, v.name);
  w.message(2, (type) =>
    type.message(1, (tensor) => {
      tensor.int(1, v.type);
      tensor.message(2, (shape) => {
        for (const d of v.dims) shape.message(1, (dim) => dim.int(1, d));
      });
    }),
  );
}

/** Serialises a ModelProto with one graph in the default ("ai.onnx") domain. */
export function encodeModel(spec: ModelSpec): Uint8Array {
  const w = new Writer();
  w.int(1, spec.irVersion);
  w.string(2, 'fused-dpo bench');
  w.message(7, (g) => {
    spec.nodes.forEach((n, k) =>
      g.message(1, (node) => {
        for (const x of n.inputs) node.string(1, x);
        for (const x of n.outputs) node.string(2, x);
        node.string(3, `${n.op}_${k}`);
        node.string(4, n.op);
        for (const [name, v] of Object.entries(n.attrs ?? {})) node.message(5, (a) => writeAttr(a, name, v));
      }),
    );
    g.string(2, spec.graphName ?? 'graph');
    for (const t of spec.initializers) {
      g.message(5, (tensor) => {
        for (const d of t.dims) tensor.int(1, d);
        tensor.int(2, t.type);
        tensor.string(8, t.name);
        tensor.bytes(9, t.raw);
      });
    }
    for (const v of spec.inputs) g.message(11, (vi) => writeValueInfo(vi, v));
    for (const v of spec.outputs) g.message(12, (vi) => writeValueInfo(vi, v));
  });
  w.message(8, (op) => op.string(1, '').int(2, spec.opset));
  return w.finish();
}

export const raw = {
  f32: (xs: ArrayLike<number>) => new Uint8Array(Float32Array.from(xs).buffer),
  i64: (xs: ArrayLike<number>) => new Uint8Array(BigInt64Array.from(Array.from(xs, (x) => BigInt(x))).buffer),
};
