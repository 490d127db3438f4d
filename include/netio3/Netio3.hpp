#pragma once

/// @file
/// The whole netio3 API: the backends (`Netio3Backend.hpp`, `EpollEventLoop.hpp`) and the frontend
/// on top of them: coalesced sending (`NetioSender`, `NetioReceiver`), publish/subscribe by 64-bit
/// tag (`NetioPublisher`, `NetioSubscriber`) and the buffered wire format (`BufferFormatter`).
/// Link target: `netio3::netio3` (CMake) or `netio3` (pkg-config). Guide: docs/frontend.md.

#include "netio3/BufferFormatter.hpp"
#include "netio3/EpollEventLoop.hpp"
#include "netio3/FrontendTypes.hpp"
#include "netio3/Netio3Backend.hpp"
#include "netio3/NetioPublisher.hpp"
#include "netio3/NetioReceiver.hpp"
#include "netio3/NetioSender.hpp"
#include "netio3/NetioSubscriber.hpp"
