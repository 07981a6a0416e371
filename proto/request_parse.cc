#include "proto/request_parse.h"

#include <map>
#include <vector>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/unknown_field_set.h"
#include "google/protobuf/wire_format_lite.h"

namespace tessera::proto {
namespace {

namespace pb = google::protobuf;
using pb::internal::WireFormatLite;

constexpr int kMaxDepth = 64;

// Length of the valid UTF-8 sequence at s[i] (as protobuf checks it: no overlong forms, no surrogates,
// nothing above U+10FFFF), or 0.
size_t SequenceLength(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  auto cont = [&](size_t k) { return k < s.size() && (b(k) & 0xC0) == 0x80; };
  unsigned char c = b(i);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(i + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(i + 1) || !cont(i + 2)) return 0;
    if (c == 0xE0 && b(i + 1) < 0xA0) return 0;   // overlong
    if (c == 0xED && b(i + 1) >= 0xA0) return 0;  // surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
    if (c == 0xF0 && b(i + 1) < 0x90) return 0;   // overlong
    if (c == 0xF4 && b(i + 1) >= 0x90) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

// Returns whether `s` was valid; else replaces it with its sanitized form.
bool FixUtf8(std::string* s) {
  std::string out;
  bool valid = true;
  for (size_t i = 0; i < s->size();) {
    size_t n = SequenceLength(*s, i);
    if (n == 0) {
      valid = false;
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(*s, i, n);
      i += n;
    }
  }
  if (!valid) *s = std::move(out);
  return valid;
}

// Copies the message `in` of type `d` to `out` with invalid strings sanitized (recursing into
// sub-messages), recording the first bad field's path. false for malformed wire data.
bool Rewrite(const pb::Descriptor* d, std::string_view in, const std::string& prefix, std::string* out,
             std::string* first_bad, int depth) {
  if (depth > kMaxDepth) return false;
  pb::io::ArrayInputStream input_stream(in.data(), static_cast<int>(in.size()));
  pb::io::CodedInputStream input(&input_stream);
  pb::io::StringOutputStream output_stream(out);
  pb::io::CodedOutputStream output(&output_stream);
  std::map<int, int> index;  // occurrences so far of each repeated field
  while (true) {
    uint32_t tag = input.ReadTag();
    if (tag == 0) break;
    const pb::FieldDescriptor* f = d->FindFieldByNumber(WireFormatLite::GetTagFieldNumber(tag));
    bool delimited = WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
    if (f == nullptr || !delimited ||
        (f->type() != pb::FieldDescriptor::TYPE_STRING && f->type() != pb::FieldDescriptor::TYPE_MESSAGE)) {
      if (!WireFormatLite::SkipField(&input, tag, &output)) return false;
      continue;
    }
    uint32_t length = 0;
    std::string value;
    if (!input.ReadVarint32(&length) || !input.ReadString(&value, static_cast<int>(length))) return false;
    std::string path = prefix + f->name();
    if (f->is_repeated()) path += "[" + std::to_string(index[f->number()]++) + "]";
    if (f->type() == pb::FieldDescriptor::TYPE_STRING) {
      if (!FixUtf8(&value) && first_bad->empty()) *first_bad = path;
    } else {
      std::string inner;
      if (!Rewrite(f->message_type(), value, path + ".", &inner, first_bad, depth + 1)) return false;
      value = std::move(inner);
    }
    output.WriteTag(tag);
    output.WriteVarint32(static_cast<uint32_t>(value.size()));
    output.WriteString(value);
  }
  return input.CurrentPosition() == static_cast<int>(in.size());
}

}  // namespace

bool ParseRequest(std::string_view bytes, google::protobuf::Message* msg) {
  if (msg->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return true;
  std::string fixed, bad;
  if (!Rewrite(msg->GetDescriptor(), bytes, "", &fixed, &bad, 0) || bad.empty()) return false;
  if (!msg->ParseFromString(fixed)) return false;
  msg->GetReflection()->MutableUnknownFields(msg)->AddLengthDelimited(kUtf8ErrorField, bad);
  return true;
}

std::string Utf8ErrorPath(const google::protobuf::Message& msg) {
  const pb::UnknownFieldSet& unknown = msg.GetReflection()->GetUnknownFields(msg);
  for (int i = 0; i < unknown.field_count(); ++i) {
    const pb::UnknownField& f = unknown.field(i);
    if (f.number() == kUtf8ErrorField && f.type() == pb::UnknownField::TYPE_LENGTH_DELIMITED) {
      return f.length_delimited();
    }
  }
  return "";
}

grpc::Status DeserializeRequest(grpc::ByteBuffer* buffer, google::protobuf::Message* msg) {
  if (buffer == nullptr) return grpc::Status(grpc::StatusCode::INTERNAL, "no request payload");
  std::vector<grpc::Slice> slices;
  grpc::Status dumped = buffer->Dump(&slices);
  buffer->Clear();
  if (!dumped.ok()) return dumped;
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  if (!ParseRequest(bytes, msg)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the request is not a valid " + msg->GetDescriptor()->full_name() + " message");
  }
  return grpc::Status::OK;
}

}  // namespace tessera::proto
