/*
 * Tinkerbell: the Tinker training API on one libuv event loop.
 * The umbrella header; each module's public header can also be included
 * on its own.
 */
#ifndef TINKERBELL_H
#define TINKERBELL_H

#include "tinkerbell/common.h"
#include "tinkerbell/error.h"
#include "tinkerbell/server.h"
#include "tinkerbell/future.h"
#include "tinkerbell/client.h"
#include "tinkerbell/service_client.h"
#include "tinkerbell/types.h"
#include "tinkerbell/training_client.h"
#include "tinkerbell/sampling_client.h"
#include "tinkerbell/rest_client.h"
#include "tinkerbell/tokenizer.h"
#include "tinkerbell/renderer.h"

#endif /* TINKERBELL_H */
