/*
 * The generated protobuf-c declarations of the Tinker wire messages
 * (tinker_public.proto), for the codecs of both the server and the client.
 */
#ifndef TB_WIRE_PROTO_H
#define TB_WIRE_PROTO_H

#include "tinker_public.pb-c.h"

#endif /* TB_WIRE_PROTO_H */
